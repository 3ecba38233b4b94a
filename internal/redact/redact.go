// Package redact removes secret values and token-shaped strings from text
// before it reaches a log line, a log entry, an error or an output.
package redact

import (
	"bytes"
	"encoding/json"
	"regexp"
	"sort"
	"strings"
)

// Mask replaces every secret.
const Mask = "[REDACTED]"

// minSecretLength keeps short values (for example "true" or "1") from being
// treated as secrets and shredding ordinary text.
const minSecretLength = 6

// tokenShapes matches credentials by their well-known prefixes even when the
// worker was never told their values (an agent may print one it found).
var tokenShapes = regexp.MustCompile(`\b(?:phx_|phc_|ghp_|gho_|ghu_|ghs_|ghr_|github_pat_|sk-ant-|sk-proj-|sk-|xox[abprs]-)[A-Za-z0-9_\-]{10,}|\bAKIA[0-9A-Z]{16}\b`)

// urlCredentials matches the user:password@ part of a URL.
var urlCredentials = regexp.MustCompile(`(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@"'<>]+:[^/\s@"'<>]+@`)

// secretSuffixes mark environment variables whose values are secrets.
var secretSuffixes = []string{"_TOKEN", "_KEY", "_SECRET", "_PASSWORD"}

// FromEnvironment returns the values of the variables in environ (as
// os.Environ gives them) whose names say they hold a secret.
func FromEnvironment(environ []string) []string {
	var values []string
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || len(value) < minSecretLength {
			continue
		}
		upper := strings.ToUpper(name)
		for _, suffix := range secretSuffixes {
			if strings.HasSuffix(upper, suffix) {
				values = append(values, value)
				break
			}
		}
	}
	return values
}

// Redactor knows a fixed set of secret values.
type Redactor struct {
	replacer *strings.Replacer
	secrets  []string
	next     *Redactor
}

// New returns a Redactor for the given secret values; empty and short ones are ignored.
func New(secrets ...string) *Redactor {
	seen := map[string]bool{}
	var values []string
	for _, s := range secrets {
		s = strings.TrimSpace(s)
		if len(s) < minSecretLength || seen[s] {
			continue
		}
		seen[s] = true
		values = append(values, s)
		// The same secret inside a JSON string, escaped by Go (which also
		// escapes <, > and &) or by an encoder that leaves HTML alone.
		for _, escaped := range jsonEscaped(s) {
			if !seen[escaped] {
				seen[escaped] = true
				values = append(values, escaped)
			}
		}
	}
	// Longest first, so a secret that contains another is masked whole.
	sort.Slice(values, func(i, j int) bool { return len(values[i]) > len(values[j]) })
	var pairs []string
	for _, v := range values {
		pairs = append(pairs, v, Mask)
	}
	r := &Redactor{}
	if len(pairs) > 0 {
		r.replacer = strings.NewReplacer(pairs...)
		r.secrets = values
	}
	return r
}

// String returns s with every known secret and token-shaped string masked.
func (r *Redactor) String(s string) string {
	if r != nil && r.replacer != nil && r.holdsSecret(s) {
		s = r.replacer.Replace(s)
	}
	if r != nil && r.next != nil {
		s = r.next.String(s)
	}
	// The regular expressions cost far more than the literal checks that
	// rule them out for almost every line.
	if strings.Contains(s, "://") && strings.Contains(s, "@") {
		s = urlCredentials.ReplaceAllString(s, "${1}"+Mask+"@")
	}
	if mayHoldToken(s) {
		s = tokenShapes.ReplaceAllString(s, Mask)
	}
	return s
}

// holdsSecret is a fast check that rules out the replacer for most lines.
func (r *Redactor) holdsSecret(s string) bool {
	for _, secret := range r.secrets {
		if strings.Contains(s, secret) {
			return true
		}
	}
	return false
}

// tokenPrefixes are the literal starts of every token shape.
var tokenPrefixes = []string{"phx_", "phc_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk-", "xox", "AKIA"}

func mayHoldToken(s string) bool {
	for _, p := range tokenPrefixes {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// Value masks every string inside a JSON-like value (maps, slices, strings),
// returning a copy; other values are returned as they are.
func (r *Redactor) Value(v any) any {
	switch t := v.(type) {
	case string:
		return r.String(t)
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, val := range t {
			out[k] = r.Value(val)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, val := range t {
			out[i] = r.Value(val)
		}
		return out
	default:
		return v
	}
}

func jsonEscaped(s string) []string {
	var out []string
	for _, html := range []bool{true, false} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(html)
		if enc.Encode(s) != nil {
			continue
		}
		quoted := strings.TrimSuffix(buf.String(), "\n")
		if escaped := quoted[1 : len(quoted)-1]; escaped != s {
			out = append(out, escaped)
		}
	}
	return out
}

// Chain returns a Redactor that masks what r masks and then what next masks.
func (r *Redactor) Chain(next *Redactor) *Redactor {
	if next == nil || next.replacer == nil {
		return r
	}
	return &Redactor{replacer: r.replacer, secrets: r.secrets, next: next}
}
