// Package examples ships the bundled example agent, so the local stack can
// write it out and run it on a machine that has only the binary.
package examples

import _ "embed"

// DemoAgent is examples/demo-agent.sh: it reads the prompt, writes a plan
// artifact, edits README.md and CHANGES.md, and talks about each step.
//
//go:embed demo-agent.sh
var DemoAgent []byte
