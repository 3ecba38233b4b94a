package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/artifacts"
)

// protocol reads the command agent's stdout. A line that is a JSON object
// whose "type" is one of the vocabulary below becomes the matching entry;
// every other line is an info console entry, as it is.
//
//	{"type":"message","text":"..."}                                        agent_message
//	{"type":"tool_call","id":"c1","title":"...","kind":"execute","input":{}} tool_call
//	{"type":"tool_result","id":"c1","status":"completed|failed","output":"..."} tool_call_update
//	{"type":"progress","step":"tests","status":"started|completed|failed","label":"...","detail":"..."}
//	{"type":"output","summary":"...","result":<any JSON>,"session":"..."}   the run's summary / JSON result; the session the next turn gets as TASK_SESSION
//	{"type":"artifact","path":"report.md","name":"optional name"}           file (in the clone) to upload, see saveArtifact
//
// A line of the vocabulary that breaks its rules is shown as a warning that
// says what is wrong, so an agent's author can fix it.
type protocol struct {
	sink         Sink
	artifactsDir string
	workDir      string

	mu         sync.Mutex
	summary    string
	session    string
	structured json.RawMessage
}

type protocolLine struct {
	Type    string          `json:"type"`
	Text    string          `json:"text"`
	ID      string          `json:"id"`
	Title   string          `json:"title"`
	Kind    string          `json:"kind"`
	Input   json.RawMessage `json:"input"`
	Status  string          `json:"status"`
	Output  *string         `json:"output"`
	Step    string          `json:"step"`
	Label   string          `json:"label"`
	Detail  string          `json:"detail"`
	Summary *string         `json:"summary"`
	Result  json.RawMessage `json:"result"`
	Session string          `json:"session"`
	Path    string          `json:"path"`
	Name    string          `json:"name"`
}

var protocolTypes = map[string]bool{"message": true, "tool_call": true, "tool_result": true, "progress": true, "output": true, "artifact": true}

func (p *protocol) line(line string) {
	trimmed := strings.TrimSpace(line)
	if !strings.HasPrefix(trimmed, "{") {
		p.sink.Emit(acp.Console(acp.LevelInfo, line))
		return
	}
	var l protocolLine
	if err := json.Unmarshal([]byte(trimmed), &l); err != nil || !protocolTypes[l.Type] {
		p.sink.Emit(acp.Console(acp.LevelInfo, line))
		return
	}
	entry, err := p.entry(l)
	if err != nil {
		p.sink.Emit(acp.Console(acp.LevelWarn, fmt.Sprintf("agent protocol: %s line: %v: %s", l.Type, err, clipText(line, 2000))))
		return
	}
	if entry != nil {
		p.sink.Emit(*entry)
	}
}

func (p *protocol) entry(l protocolLine) (*acp.Entry, error) {
	var e acp.Entry
	switch l.Type {
	case "message":
		if l.Text == "" {
			return nil, errors.New(`"text" is missing`)
		}
		e = acp.AgentMessage(l.Text)
	case "tool_call":
		if l.ID == "" {
			return nil, errors.New(`"id" is missing: tool_result lines refer to it`)
		}
		title := l.Title
		if title == "" {
			title = l.ID
		}
		var input any
		if len(l.Input) > 0 {
			input = clipJSON(l.Input)
		}
		e = acp.ToolCall(l.ID, title, l.Kind, input)
	case "tool_result":
		if l.ID == "" {
			return nil, errors.New(`"id" is missing: it names the tool_call this result ends`)
		}
		if l.Status != "" && l.Status != acp.ToolCompleted && l.Status != acp.ToolFailed {
			return nil, fmt.Errorf(`"status" is %q: use completed or failed`, l.Status)
		}
		output := ""
		if l.Output != nil {
			output = clipText(*l.Output, maxToolOutputBytes)
		}
		e = acp.ToolCallUpdate(l.ID, l.Status == acp.ToolFailed, output)
	case "progress":
		if l.Step == "" {
			return nil, errors.New(`"step" is missing`)
		}
		switch l.Status {
		case acp.StepStarted, acp.StepCompleted, acp.StepFailed:
		default:
			return nil, fmt.Errorf(`"status" is %q: use started, completed or failed`, l.Status)
		}
		label := l.Label
		if label == "" {
			label = l.Step
		}
		e = acp.Progress("agent", l.Step, l.Status, label, l.Detail)
	case "output":
		if l.Summary == nil && len(l.Result) == 0 && l.Session == "" {
			return nil, errors.New(`give "summary" (text), "result" (JSON) or "session", or more than one`)
		}
		p.mu.Lock()
		if l.Summary != nil {
			p.summary = *l.Summary
		}
		if l.Session != "" {
			p.session = l.Session
		}
		if len(l.Result) > 0 {
			p.structured = append(json.RawMessage(nil), l.Result...)
		}
		p.mu.Unlock()
		return nil, nil
	case "artifact":
		name, err := p.saveArtifact(l.Path, l.Name)
		if err != nil {
			return nil, err
		}
		e = acp.Console(acp.LevelInfo, fmt.Sprintf("artifact %s saved for upload", name))
	}
	return &e, nil
}

// saveArtifact copies a file the agent names into the artifacts folder,
// which is uploaded when the run publishes. The agent is untrusted, and so
// is its path: relative to the clone or absolute, it must name a file in the
// clone or the artifacts folder — compared as written, never resolved — and
// is then opened as package artifacts opens, following no symlink on its
// way (the clone's folder itself included), never a pipe or a device, at
// most the artifact limit. The copy replaces what is at its name, never
// writing through a symlink there.
func (p *protocol) saveArtifact(path, name string) (string, error) {
	if path == "" {
		return "", errors.New(`"path" is missing`)
	}
	src, err := p.locate(path)
	if err != nil {
		return "", err
	}
	if name == "" {
		name = filepath.Base(src.Rel)
	}
	name = filepath.Base(name)
	if name == "." || name == ".." || name == string(filepath.Separator) {
		return "", fmt.Errorf("name %q is not a file name", name)
	}
	if err := artifacts.Copy(src, within(p.artifactsDir, "."), name, artifacts.MaxFileBytes); err != nil {
		return "", fmt.Errorf("path %s: %w", path, err)
	}
	return name, nil
}

// locate is the agent's path in the clone or the artifacts folder.
func (p *protocol) locate(path string) (artifacts.Path, error) {
	abs := path
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(p.workDir, abs)
	}
	abs = filepath.Clean(abs)
	for _, root := range []string{p.workDir, p.artifactsDir} {
		if root == "" {
			continue
		}
		// An agent that spells the folder resolved (pwd -P) names it too.
		spellings := []string{filepath.Clean(root)}
		if real, err := filepath.EvalSymlinks(root); err == nil && real != spellings[0] {
			spellings = append(spellings, real)
		}
		for _, spelling := range spellings {
			if rel, err := filepath.Rel(spelling, abs); err == nil && filepath.IsLocal(rel) {
				return within(root, rel), nil
			}
		}
	}
	return artifacts.Path{}, fmt.Errorf("path %s is outside the working directory; only files of the clone (or of TASK_ARTIFACTS_DIR) can be artifacts", path)
}

// within is rel in the folder dir, one the worker made for the run: the
// folder it is in is the worker's, dir itself and all below it the agent's.
func within(dir, rel string) artifacts.Path {
	dir = filepath.Clean(dir)
	return artifacts.Path{Base: filepath.Dir(dir), Rel: filepath.Join(filepath.Base(dir), rel)}
}

func (p *protocol) result() Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Result{Summary: p.summary, Structured: p.structured, Session: p.session}
}
