// Package devstack wires an embedded Temporal server, the local Tasks API and an
// in-process worker into one local stack for development, the demo and end-to-end tests.
package devstack
