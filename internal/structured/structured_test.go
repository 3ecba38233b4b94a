package structured

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

const schema = `{"type":"object","required":["severity","files"],"additionalProperties":false,
	"properties":{"severity":{"enum":["low","high"]},"files":{"type":"array","items":{"type":"string"}},"score":{"type":"number","maximum":10}}}`

func TestValidResultPasses(t *testing.T) {
	s, err := Compile(json.RawMessage(schema))
	require.NoError(t, err)
	require.NoError(t, s.Validate(json.RawMessage(`{"severity":"high","files":["a.go"]}`)))
}

func TestViolationsAreNamedWithTheirPlace(t *testing.T) {
	s, err := Compile(json.RawMessage(schema))
	require.NoError(t, err)
	err = s.Validate(json.RawMessage(`{"severity":"medium","files":[1],"score":11,"extra":true}`))
	require.Error(t, err)
	msg := err.Error()
	require.Contains(t, msg, "the result does not match the task's json_schema: ")
	for _, want := range []string{"at /severity:", "at /files/0:", "at /score:", "extra"} {
		require.Contains(t, msg, want)
	}
	err = s.Validate(json.RawMessage(`{}`))
	require.ErrorContains(t, err, "missing properties")
	require.ErrorContains(t, s.Validate(json.RawMessage(`{nope`)), "the result is not JSON")
}

func TestAnInvalidSchemaIsReported(t *testing.T) {
	_, err := Compile(json.RawMessage(`{"type":"nonsense"}`))
	require.ErrorContains(t, err, "json_schema is not a valid JSON Schema")
	_, err = Compile(json.RawMessage(`{"type":`))
	require.ErrorContains(t, err, "json_schema is not JSON")
}

func TestFindPrefersProtocolThenFileThenFinalMessage(t *testing.T) {
	file := filepath.Join(t.TempDir(), "output.json")
	got, src, err := Find(json.RawMessage(`{"a":1}`), file, `{"a":3}`)
	require.NoError(t, err)
	require.Equal(t, FromProtocol, src)
	require.JSONEq(t, `{"a":1}`, string(got))

	require.NoError(t, os.WriteFile(file, []byte("{\"a\":2}\n"), 0o644))
	got, src, err = Find(nil, file, `{"a":3}`)
	require.NoError(t, err)
	require.Equal(t, FromOutputFile, src)
	require.JSONEq(t, `{"a":2}`, string(got))

	got, src, err = Find(nil, filepath.Join(t.TempDir(), "none.json"), "Here it is:\n```json\n{\"a\":3}\n```\n")
	require.NoError(t, err)
	require.Equal(t, FromFinalMessage, src)
	require.JSONEq(t, `{"a":3}`, string(got))

	_, _, err = Find(nil, "", "I could not do it.")
	require.ErrorContains(t, err, "final message is not JSON")
	_, _, err = Find(nil, "", "")
	require.ErrorContains(t, err, "the agent gave no result")
}
