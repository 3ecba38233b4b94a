// Package egress is a run's way out of its isolated network: an HTTP(S)
// proxy that lets it reach the hosts the policy allows and nothing else.
package egress

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// DefaultAllow are the hosts a run reaches unless TASKWORKER_EGRESS_ALLOW
// says otherwise: the common package registries, read-only mirrors of code,
// and GitHub's hosts for reading repositories. The run has no credential
// for any of them, so what it can do there is read.
var DefaultAllow = []string{
	// npm, yarn
	"registry.npmjs.org", "registry.yarnpkg.com",
	// Python
	"pypi.org", "files.pythonhosted.org",
	// Go
	"proxy.golang.org", "sum.golang.org", "storage.googleapis.com",
	// Rust
	"crates.io", "index.crates.io", "static.crates.io",
	// Ruby
	"rubygems.org", "index.rubygems.org",
	// Java
	"repo.maven.apache.org", "repo1.maven.org", "plugins.gradle.org", "services.gradle.org",
	// Debian/Ubuntu packages, for a repository's setup script
	"deb.debian.org", "security.debian.org", "archive.ubuntu.com", "security.ubuntu.com",
	// GitHub, reading
	"github.com", "codeload.github.com", "objects.githubusercontent.com", "raw.githubusercontent.com",
}

// Policy says which destinations a run may reach.
type Policy struct {
	// all is "*": any public address.
	all   bool
	hosts []hostRule
	nets  []netip.Prefix
}

type hostRule struct {
	name string // lower case; a leading "*." matches any subdomain
	port int    // 0: the web's ports, 80 and 443
}

// Parse reads a comma-separated allow list: host names ("pypi.org"),
// subdomain patterns ("*.example.com"), either with a port ("git.corp:8443"),
// address ranges ("10.1.0.0/16", "192.0.2.7"), "defaults" for DefaultAllow,
// and "*" for every public address. Private, loopback, link-local (cloud
// metadata) and other special addresses are reached only when an entry
// names them: an address range that holds them, or a host name that
// resolves to them.
func Parse(list string) (*Policy, error) {
	p := &Policy{}
	for _, entry := range strings.Split(list, ",") {
		entry = strings.ToLower(strings.TrimSpace(entry))
		switch {
		case entry == "":
		case entry == "*":
			p.all = true
		case entry == "defaults":
			for _, h := range DefaultAllow {
				p.hosts = append(p.hosts, hostRule{name: h})
			}
		default:
			if err := p.add(entry); err != nil {
				return nil, fmt.Errorf("TASKWORKER_EGRESS_ALLOW entry %q: %w", entry, err)
			}
		}
	}
	return p, nil
}

func (p *Policy) add(entry string) error {
	if strings.Contains(entry, "/") {
		prefix, err := netip.ParsePrefix(entry)
		if err != nil {
			return fmt.Errorf("not an address range (like 10.0.0.0/8): %w", err)
		}
		p.nets = append(p.nets, prefix.Masked())
		return nil
	}
	if addr, err := netip.ParseAddr(strings.Trim(entry, "[]")); err == nil {
		p.nets = append(p.nets, netip.PrefixFrom(addr, addr.BitLen()))
		return nil
	}
	name, port := entry, 0
	if h, ps, err := net.SplitHostPort(entry); err == nil {
		n, err := strconv.Atoi(ps)
		if err != nil || n <= 0 || n > 65535 {
			return fmt.Errorf("port %q is not a number from 1 to 65535", ps)
		}
		name, port = h, n
	}
	bare := strings.TrimPrefix(name, "*.")
	if bare == "" || strings.ContainsAny(bare, "*:/ ") {
		return fmt.Errorf("not a host name, *.domain, address or address range")
	}
	p.hosts = append(p.hosts, hostRule{name: name, port: port})
	return nil
}

// AllowHost is the policy with host ("name" or "name:port", the
// repository's, say) allowed too; the policy itself is unchanged.
func (p *Policy) AllowHost(host string) *Policy {
	out := &Policy{all: p.all, hosts: slices.Clone(p.hosts), nets: slices.Clone(p.nets)}
	if host = strings.ToLower(strings.TrimSpace(host)); host != "" {
		if err := out.add(host); err != nil {
			return p
		}
	}
	return out
}

// Open reports "*": every public address is allowed.
func (p *Policy) Open() bool { return p.all }

// Reason says why a destination is refused.
type Reason string

// The reasons.
const (
	NotAllowed Reason = "not_allowed"
	// Special is a private, loopback, link-local (metadata) or other
	// non-public address that no entry names.
	Special Reason = "special_address"
)

// hostNamed reports whether an entry names host on port: such a host may
// resolve to any address, a private one included.
func (p *Policy) hostNamed(host string, port int) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, r := range p.hosts {
		if r.port == 0 && port != 80 && port != 443 || r.port != 0 && r.port != port {
			continue
		}
		if suffix, ok := strings.CutPrefix(r.name, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == r.name {
			return true
		}
	}
	return false
}

// check decides whether the run may connect to host:port at addr, once
// the host name has been resolved to addr. named is hostNamed's answer.
func (p *Policy) check(named bool, addr netip.Addr) (bool, Reason) {
	addr = addr.Unmap()
	for _, n := range p.nets {
		if n.Contains(addr) {
			return true, ""
		}
	}
	if special(addr) {
		if named {
			return true, ""
		}
		return false, Special
	}
	if named || p.all {
		return true, ""
	}
	return false, NotAllowed
}

// specialRanges are addresses that are not the public internet: the
// cluster's own networks, the host, and the cloud's metadata service.
var specialRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/3"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

func special(addr netip.Addr) bool {
	for _, r := range specialRanges {
		if r.Contains(addr) {
			return true
		}
	}
	return false
}
