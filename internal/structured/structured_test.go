package structured

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/taskworker/taskworker/internal/artifacts"
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
	dir := t.TempDir()
	file := filepath.Join(dir, "output.json")
	out := artifacts.Path{Base: dir, Rel: "output.json"}
	got, src, err := Find(json.RawMessage(`{"a":1}`), out, `{"a":3}`)
	require.NoError(t, err)
	require.Equal(t, FromProtocol, src)
	require.JSONEq(t, `{"a":1}`, string(got))

	require.NoError(t, os.WriteFile(file, []byte("{\"a\":2}\n"), 0o644))
	got, src, err = Find(nil, out, `{"a":3}`)
	require.NoError(t, err)
	require.Equal(t, FromOutputFile, src)
	require.JSONEq(t, `{"a":2}`, string(got))

	got, src, err = Find(nil, artifacts.Path{Base: dir, Rel: "none.json"}, "Here it is:\n```json\n{\"a\":3}\n```\n")
	require.NoError(t, err)
	require.Equal(t, FromFinalMessage, src)
	require.JSONEq(t, `{"a":3}`, string(got))

	_, _, err = Find(nil, artifacts.Path{}, "I could not do it.")
	require.ErrorContains(t, err, "final message is not JSON")
	_, _, err = Find(nil, artifacts.Path{}, "")
	require.ErrorContains(t, err, "the agent gave no result")
}

// find runs Find on the output file rel beneath dir, failing the test if it
// does not return in time (a blocked open never would).
func find(t *testing.T, dir, rel string) (json.RawMessage, error) {
	t.Helper()
	type found struct {
		result json.RawMessage
		err    error
	}
	done := make(chan found, 1)
	go func() {
		result, _, err := Find(nil, artifacts.Path{Base: dir, Rel: rel}, `{"from":"the final message"}`)
		done <- found{result, err}
	}()
	select {
	case f := <-done:
		return f.result, f.err
	case <-time.After(10 * time.Second):
		t.Fatal("Find did not return within 10s: it is blocked on the output file")
		return nil, nil
	}
}

func TestTheOutputFileIsNeverASymlink(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret.json")
	require.NoError(t, os.WriteFile(secret, []byte(`{"token":"the worker's secret"}`), 0o600))
	require.NoError(t, os.Symlink(secret, filepath.Join(dir, "output.json")))
	got, err := find(t, dir, "output.json")
	require.EqualError(t, err, "read TASK_OUTPUT_FILE: output.json is a symlink (never followed)")
	require.NotContains(t, string(got), "secret")
}

func TestTheOutputFileIsNotReadThroughASymlinkedFolder(t *testing.T) {
	base := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(base, "other-run"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(base, "other-run", "output.json"), []byte(`{"their":"result"}`), 0o644))
	require.NoError(t, os.Symlink(filepath.Join(base, "other-run"), filepath.Join(base, "run")))
	got, err := find(t, base, "run/output.json")
	require.EqualError(t, err, "read TASK_OUTPUT_FILE: run is a symlink (never followed)")
	require.Empty(t, got)
}

func TestAnOutputFileThatIsANamedPipeDoesNotBlock(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, unix.Mkfifo(filepath.Join(dir, "output.json"), 0o644))
	_, err := find(t, dir, "output.json")
	require.EqualError(t, err, "read TASK_OUTPUT_FILE: output.json is a named pipe, not a regular file")
}

func TestAnOutputFileOverTheCapIsNotRead(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "output.json"))
	require.NoError(t, err)
	require.NoError(t, f.Truncate(MaxOutputFileBytes+1)) // sparse: no room taken
	require.NoError(t, f.Close())
	_, err = find(t, dir, "output.json")
	require.EqualError(t, err, "read TASK_OUTPUT_FILE: output.json is 16777217 bytes, over the 16777216 byte limit")
}

func TestAResultNeverOverwritesTheWorkersKeys(t *testing.T) {
	output := map[string]any{"pr_url": "https://github.com/acme/app/pull/7", "commit_sha": "abc123", "changed": true, "base_sha": "def456"}
	got, moved := Merge(output, json.RawMessage(`{"pr_url":"https://evil.example/pr","commit_sha":"0000","changed":false,
		"usage":{"cost_usd":0},"result":"nested","severity":"high"}`))
	require.Equal(t, "https://github.com/acme/app/pull/7", got["pr_url"])
	require.Equal(t, "abc123", got["commit_sha"])
	require.Equal(t, true, got["changed"])
	require.Equal(t, "def456", got["base_sha"])
	require.NotContains(t, got, "usage", "the worker's keys are reserved even when this run did not write them")
	require.Equal(t, "high", got["severity"], "the result's own keys are at the top level")
	require.Equal(t, map[string]any{"pr_url": "https://evil.example/pr", "commit_sha": "0000", "changed": false,
		"usage": map[string]any{"cost_usd": float64(0)}, "result": "nested"}, got["result"], "nothing of the result is lost")
	require.Equal(t, []string{"changed", "commit_sha", "pr_url", "result", "usage"}, moved)
}

func TestAResultThatIsNoObjectIsTheOutputsResult(t *testing.T) {
	got, moved := Merge(map[string]any{"changed": false}, json.RawMessage(`[1,2]`))
	require.Equal(t, map[string]any{"changed": false, "result": []any{float64(1), float64(2)}}, got)
	require.Empty(t, moved)
	got, moved = Merge(map[string]any{"changed": false}, json.RawMessage(`{"severity":"low"}`))
	require.Equal(t, map[string]any{"changed": false, "severity": "low"}, got)
	require.Empty(t, moved)
	got, _ = Merge(map[string]any{"changed": false}, nil)
	require.Equal(t, map[string]any{"changed": false}, got)
}
