// Package structured checks the JSON result of a task that has a json_schema:
// it finds the result the agent handed over and validates it.
package structured

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/taskworker/taskworker/internal/artifacts"
)

// maxViolations is how many problems an error names.
const maxViolations = 5

// Schema is a compiled task schema.
type Schema struct {
	schema *jsonschema.Schema
}

// Compile reads a task's json_schema.
func Compile(raw json.RawMessage) (*Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("json_schema is not JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("task-schema.json", doc); err != nil {
		return nil, fmt.Errorf("json_schema: %w", err)
	}
	s, err := c.Compile("task-schema.json")
	if err != nil {
		return nil, fmt.Errorf("json_schema is not a valid JSON Schema: %w", err)
	}
	return &Schema{schema: s}, nil
}

// Validate checks a result against the schema; the error names the first violations.
func (s *Schema) Validate(result json.RawMessage) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(result))
	if err != nil {
		return fmt.Errorf("the result is not JSON: %w", err)
	}
	err = s.schema.Validate(doc)
	var verr *jsonschema.ValidationError
	if !errors.As(err, &verr) {
		return err
	}
	var problems []string
	for _, unit := range verr.BasicOutput().Errors {
		if unit.Error == nil {
			continue
		}
		at := unit.InstanceLocation
		if at == "" {
			at = "/"
		}
		problems = append(problems, fmt.Sprintf("at %s: %s", at, unit.Error.String()))
	}
	if len(problems) == 0 {
		return fmt.Errorf("the result does not match the schema: %v", err)
	}
	more := ""
	if len(problems) > maxViolations {
		more = fmt.Sprintf(" (and %d more)", len(problems)-maxViolations)
		problems = problems[:maxViolations]
	}
	return fmt.Errorf("the result does not match the task's json_schema: %s%s", strings.Join(problems, "; "), more)
}

// Source is where a result was found.
type Source string

// The places a result is looked for, in this order.
const (
	FromProtocol     Source = "the agent's structured output"
	FromOutputFile   Source = "TASK_OUTPUT_FILE"
	FromFinalMessage Source = "the final message"
)

// MaxOutputFileBytes is the largest TASK_OUTPUT_FILE read. A result goes
// into the run's output, one JSON object the API stores and serves whole:
// far below this in any sane task, and never the agent's gigabytes.
const MaxOutputFileBytes = 16 << 20

// Find picks the agent's result: what it handed over as structured output
// (Claude Code's StructuredOutput tool, the command protocol's output line),
// else the output file, else the final message — bare JSON or one fenced
// ```json block. The agent wrote the output file, so it is read as
// artifacts.ReadFile reads: a regular file, no symlink on its way, at most
// MaxOutputFileBytes; a zero outputFile is not looked for.
func Find(protocol json.RawMessage, outputFile artifacts.Path, finalMessage string) (json.RawMessage, Source, error) {
	if len(bytes.TrimSpace(protocol)) > 0 {
		return protocol, FromProtocol, nil
	}
	if !outputFile.IsZero() {
		data, err := artifacts.ReadFile(outputFile, MaxOutputFileBytes)
		switch {
		case err == nil:
			return bytes.TrimSpace(data), FromOutputFile, nil
		case !errors.Is(err, fs.ErrNotExist):
			return nil, FromOutputFile, fmt.Errorf("read TASK_OUTPUT_FILE: %w", err)
		}
	}
	text := strings.TrimSpace(finalMessage)
	if text == "" {
		return nil, "", errors.New("the agent gave no result: the task has a json_schema, so it must write JSON to TASK_OUTPUT_FILE or end with a message that is only that JSON")
	}
	if fenced, ok := fencedJSON(text); ok {
		text = fenced
	}
	if !json.Valid([]byte(text)) {
		return nil, FromFinalMessage, fmt.Errorf("the agent's final message is not JSON (the task has a json_schema): %q", clip(text, 200))
	}
	return json.RawMessage(text), FromFinalMessage, nil
}

// fencedJSON returns the body of the message's one ``` code block.
func fencedJSON(text string) (string, bool) {
	start := strings.Index(text, "```")
	if start < 0 {
		return "", false
	}
	rest := text[start+3:]
	if nl := strings.IndexByte(rest, '\n'); nl >= 0 {
		rest = rest[nl+1:] // past the language tag
	}
	end := strings.Index(rest, "```")
	if end < 0 {
		return "", false
	}
	return strings.TrimSpace(rest[:end]), true
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
