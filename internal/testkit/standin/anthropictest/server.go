// Package anthropictest is a scripted stand-in for the Anthropic Messages API
// (POST /v1/messages, streamed or not), strict to the parts of the contract a
// coding agent can get wrong: authentication, the version header, the request
// shape, and every tool_use answered by a tool_result. Claude Code talks to it
// through ANTHROPIC_BASE_URL, so tests run the real CLI with no model.
package anthropictest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/taskworker/taskworker/internal/testkit/standin"
)

// Reply is one assistant turn: text and tool calls, or an API error.
type Reply struct {
	Thinking string
	Text     string
	Tools    []ToolUse
	// Status, when set, answers with this HTTP error instead (e.g. 529, 400).
	Status  int
	ErrType string
	Message string
}

// ToolUse is a tool the assistant calls.
type ToolUse struct {
	Name  string
	Input map[string]any
}

// Conversation is what the stand-in saw of the request it answers.
type Conversation struct {
	// Prompt is the user's first message, without Claude Code's reminders.
	Prompt string
	// Turn counts the assistant messages so far: 0 for the first request.
	Turn int
	// WorkDir is the working directory the system prompt names.
	WorkDir string
	// Tools names the tools the request offers; side requests offer none.
	Tools []string
	// Results are the tool results of the last user message.
	Results []ToolResult
	Model   string
	// Said is the text of every message so far, "user: …" or "assistant: …"
	// (a user message that holds tool results alone says nothing): what a
	// resumed conversation carries of its earlier turns.
	Said []string
	// Latest is the text of the last user message, "" when it only returns
	// tool results: a follow-up's message on the first request of its turn.
	Latest string
}

// ToolResult is what a tool returned to the assistant.
type ToolResult struct {
	ToolUseID string
	Content   string
	IsError   bool
}

// Script decides the reply to a request.
type Script func(Conversation) Reply

// Server is a running stand-in.
type Server struct{ standin.ModelServer }

// Start serves script, accepting apiKey as x-api-key or a bearer token.
func Start(apiKey string, script Script) *Server {
	s := &Server{}
	s.messagesAPI().Serve(&s.ModelServer, apiKey, script)
	return s
}

func (s *Server) messagesAPI() standin.ModelAPI[request, Conversation, Reply] {
	return standin.ModelAPI[request, Conversation, Reply]{
		Endpoint:     "/v1/messages",
		Probe:        "/api/hello", // Claude Code's connectivity check
		NotFoundType: "not_found_error",
		Authenticated: func(r *http.Request, apiKey string) bool {
			key := r.Header.Get("x-api-key")
			if key == "" {
				key = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			}
			return key == apiKey
		},
		Unauthenticated: standin.Refusal{Status: http.StatusUnauthorized, Type: "authentication_error", Message: "invalid x-api-key"},
		CheckHeaders: func(r *http.Request) error {
			if r.Header.Get("anthropic-version") == "" {
				return errors.New("anthropic-version: header is required")
			}
			return nil
		},
		BadJSON:      "invalid JSON body: ",
		Conversation: request.conversation,
		Failure: func(reply Reply) standin.Refusal {
			return standin.Refusal{Status: reply.Status, Type: reply.ErrType, Message: reply.Message}
		},
		ErrorBody: errorBody,
		Answer:    s.answer,
	}
}

func (s *Server) answer(w http.ResponseWriter, req request, reply Reply) {
	msg := s.message(req.Model, reply)
	if req.Stream {
		s.stream(w, msg)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(msg)
}

func errorBody(typ, message string) any {
	return map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": message}}
}

type request struct {
	Model     string          `json:"model"`
	MaxTokens int             `json:"max_tokens"`
	Stream    bool            `json:"stream"`
	System    json.RawMessage `json:"system"`
	Messages  []message       `json:"messages"`
	Tools     []struct {
		Name string `json:"name"`
	} `json:"tools"`
}

type message struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type block struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	ID        string          `json:"id"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

func (m message) blocks() []block {
	var text string
	if json.Unmarshal(m.Content, &text) == nil {
		return []block{{Type: "text", Text: text}}
	}
	var blocks []block
	_ = json.Unmarshal(m.Content, &blocks)
	return blocks
}

// conversation checks the request as the API does and reads what a script needs.
func (r request) conversation() (Conversation, error) {
	switch {
	case r.Model == "":
		return Conversation{}, fmt.Errorf("model: field required")
	case r.MaxTokens < 1:
		return Conversation{}, fmt.Errorf("max_tokens: must be at least 1")
	case len(r.Messages) == 0:
		return Conversation{}, fmt.Errorf("messages: at least one message is required")
	case r.Messages[0].Role != "user":
		return Conversation{}, fmt.Errorf("messages.0.role: the first message must be a user message")
	}
	c := Conversation{Model: r.Model, WorkDir: workDir(string(r.System))}
	for _, t := range r.Tools {
		c.Tools = append(c.Tools, t.Name)
	}
	var pending map[string]bool // tool_use ids awaiting their results
	for i, m := range r.Messages {
		blocks := m.blocks()
		switch m.Role {
		case "assistant":
			if pending != nil {
				return Conversation{}, fmt.Errorf("messages.%d: tool_use ids %v have no tool_result blocks before this message", i, keys(pending))
			}
			c.Turn++
			if text := prompt(blocks); text != "" {
				c.Said = append(c.Said, "assistant: "+text)
			}
			for _, b := range blocks {
				if b.Type == "tool_use" {
					if pending == nil {
						pending = map[string]bool{}
					}
					pending[b.ID] = true
				}
			}
		case "user":
			var results []ToolResult
			for _, b := range blocks {
				if b.Type != "tool_result" {
					continue
				}
				if !pending[b.ToolUseID] {
					return Conversation{}, fmt.Errorf("messages.%d: unexpected tool_use_id found in tool_result blocks: %s. Each tool_result block must have a corresponding tool_use block in the previous message", i, b.ToolUseID)
				}
				delete(pending, b.ToolUseID)
				results = append(results, ToolResult{ToolUseID: b.ToolUseID, Content: resultText(b.Content), IsError: b.IsError})
			}
			if len(pending) > 0 {
				return Conversation{}, fmt.Errorf("messages.%d: tool_use ids %v were found without tool_result blocks immediately after", i, keys(pending))
			}
			pending = nil
			c.Results = results
			if i == 0 {
				c.Prompt = prompt(blocks)
			}
			c.Latest = prompt(blocks)
			if c.Latest != "" {
				c.Said = append(c.Said, "user: "+c.Latest)
			}
		case "system":
			for _, b := range blocks {
				if c.WorkDir == "" {
					c.WorkDir = workDir(b.Text)
				}
			}
		default:
			return Conversation{}, fmt.Errorf("messages.%d.role: %q is not user or assistant", i, m.Role)
		}
	}
	if pending != nil {
		return Conversation{}, fmt.Errorf("the last message has tool_use ids %v without tool results", keys(pending))
	}
	return c, nil
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// prompt is the user's text, without the reminders Claude Code adds.
func prompt(blocks []block) string {
	var parts []string
	for _, b := range blocks {
		if b.Type == "text" && !strings.HasPrefix(strings.TrimSpace(b.Text), "<system-reminder>") {
			parts = append(parts, b.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func workDir(system string) string {
	const marker = "Primary working directory: "
	i := strings.Index(system, marker)
	if i < 0 {
		return ""
	}
	rest := system[i+len(marker):]
	if j := strings.IndexAny(rest, "\\\n"); j >= 0 {
		rest = rest[:j]
	}
	return strings.TrimSpace(rest)
}

func resultText(raw json.RawMessage) string {
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return text
	}
	var blocks []block
	_ = json.Unmarshal(raw, &blocks)
	var parts []string
	for _, b := range blocks {
		parts = append(parts, b.Text)
	}
	return strings.Join(parts, "\n")
}
