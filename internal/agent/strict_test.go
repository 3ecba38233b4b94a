package agent

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStrictSchemasAreTheOnesOpenAIAcceptsAsTheyAre(t *testing.T) {
	for schema, strict := range map[string]bool{
		`{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false}`:                                                                                                                true,
		`{"type":"object","properties":{"list":{"type":"array","items":{"type":"object","properties":{"x":{"enum":[1,2]}},"required":["x"],"additionalProperties":false}}},"required":["list"],"additionalProperties":false}`: true,
		`{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}`:                                                                                                                                             false, // open object
		`{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}},"required":["a"],"additionalProperties":false}`:                                                                                          false, // b optional
		`{"type":"object","properties":{"a":{"oneOf":[{"type":"string"}]}},"required":["a"],"additionalProperties":false}`:                                                                                                    false, // oneOf
		`{"type":"object","properties":{"a":{"anyOf":[{"type":"string"},{"type":"object"}]}},"required":["a"],"additionalProperties":false}`:                                                                                  false, // inner open object
		`{"type":"string"}`: false, // the root must be an object
		`not json`:          false,
	} {
		require.Equal(t, strict, strictSchema(json.RawMessage(schema)), schema)
	}
}
