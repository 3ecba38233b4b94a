package agent

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Log entries stay small enough to batch and render: a tool's output, and
// each string inside a tool's input, is cut past these sizes.
const (
	maxToolOutputBytes = 64 << 10
	maxFieldBytes      = 64 << 10
)

// clipText cuts s to at most max bytes on a rune boundary, saying how much was cut.
func clipText(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf(" … [cut: %d more bytes]", len(s)-cut)
}

// clipJSON decodes raw and cuts every long string inside it. Invalid JSON is
// kept as (cut) text.
func clipJSON(raw json.RawMessage) any {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return clipText(string(raw), maxFieldBytes)
	}
	return clipValue(v)
}

func clipValue(v any) any {
	switch t := v.(type) {
	case string:
		return clipText(t, maxFieldBytes)
	case map[string]any:
		for k, x := range t {
			t[k] = clipValue(x)
		}
	case []any:
		for i, x := range t {
			t[i] = clipValue(x)
		}
	}
	return v
}
