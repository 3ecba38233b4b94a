// Package openaitest is a scripted stand-in for the OpenAI Responses API
// (POST /v1/responses, streamed), strict to what a coding agent can get
// wrong: the bearer key, the request shape, and every tool call answered by
// its output. Codex talks to it through a model provider's base_url, so tests
// run the real CLI with no model.
package openaitest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/taskworker/taskworker/internal/testkit/standin"
)

// Reply is one model response: a message, or a call of Codex's exec tool
// (JavaScript that drives its nested tools), or an API error.
type Reply struct {
	Reasoning string
	Text      string
	// Exec is the JavaScript of a call to the exec tool, e.g.
	// `const r = await tools.exec_command({cmd: "ls"}); text(r.output);`.
	Exec string
	// Status, when set, answers with this HTTP error instead.
	Status  int
	ErrType string
	Message string
}

// Conversation is what the stand-in saw of the request it answers.
type Conversation struct {
	// Prompt is the user's last message.
	Prompt string
	// Turn counts the tool outputs so far: 0 for the first request of a task.
	Turn int
	// WorkDir is the cwd of Codex's environment context.
	WorkDir string
	// Outputs are the tool outputs the request carries, oldest first.
	Outputs []string
	Model   string
	// Schema is the JSON Schema the final message must match (text.format), if any.
	Schema json.RawMessage
	// Said is the text of every user and assistant message so far, "user: …"
	// or "assistant: …": what a resumed conversation carries of its earlier turns.
	Said []string
}

// Script decides the reply to a request.
type Script func(Conversation) Reply

// Server is a running stand-in.
type Server struct{ standin.ModelServer }

// Start serves script under /v1, accepting apiKey as a bearer token.
func Start(apiKey string, script Script) *Server {
	s := &Server{}
	s.responsesAPI().Serve(&s.ModelServer, apiKey, script)
	s.URL += "/v1"
	return s
}

func (s *Server) responsesAPI() standin.ModelAPI[request, Conversation, Reply] {
	return standin.ModelAPI[request, Conversation, Reply]{
		Endpoint:     "/v1/responses",
		NotFoundType: "invalid_request_error",
		Authenticated: func(r *http.Request, apiKey string) bool {
			return r.Header.Get("Authorization") == "Bearer "+apiKey
		},
		Unauthenticated: standin.Refusal{Status: http.StatusUnauthorized, Type: "invalid_api_key", Message: "Incorrect API key provided."},
		BadJSON:         "We could not parse the JSON body of your request: ",
		Conversation:    request.conversation,
		Failure: func(reply Reply) standin.Refusal {
			return standin.Refusal{Status: reply.Status, Type: reply.ErrType, Message: reply.Message}
		},
		ErrorBody: errorBody,
		Answer:    s.stream,
	}
}

func errorBody(typ, message string) any {
	return map[string]any{"error": map[string]any{"type": typ, "message": message, "code": typ, "param": nil}}
}

type request struct {
	Model  string `json:"model"`
	Stream bool   `json:"stream"`
	Input  []item `json:"input"`
	Text   struct {
		Format struct {
			Type   string          `json:"type"`
			Name   string          `json:"name"`
			Strict bool            `json:"strict"`
			Schema json.RawMessage `json:"schema"`
		} `json:"format"`
	} `json:"text"`
}

type item struct {
	Type    string          `json:"type"`
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
	CallID  string          `json:"call_id"`
	Output  json.RawMessage `json:"output"`
}

var cwdTag = regexp.MustCompile(`<cwd>([^<]*)</cwd>`)

func (r request) conversation() (Conversation, error) {
	switch {
	case r.Model == "":
		return Conversation{}, fmt.Errorf("Missing required parameter: 'model'.")
	case len(r.Input) == 0:
		return Conversation{}, fmt.Errorf("Missing required parameter: 'input'.")
	case !r.Stream:
		return Conversation{}, fmt.Errorf("this stand-in streams only: set 'stream' to true")
	}
	c := Conversation{Model: r.Model}
	if f := r.Text.Format; f.Type == "json_schema" {
		if f.Name == "" {
			return Conversation{}, fmt.Errorf("Missing required parameter: 'text.format.name'.")
		}
		if f.Strict {
			if err := strictProblem(f.Schema, ""); err != nil {
				return Conversation{}, fmt.Errorf("Invalid schema for response_format '%s': %v", f.Name, err)
			}
		}
		c.Schema = f.Schema
	}
	calls := map[string]bool{}
	for i, it := range r.Input {
		switch it.Type {
		case "function_call", "custom_tool_call":
			if it.CallID == "" {
				return Conversation{}, fmt.Errorf("Missing required parameter: 'input[%d].call_id'.", i)
			}
			calls[it.CallID] = true
		case "function_call_output", "custom_tool_call_output":
			if !calls[it.CallID] {
				return Conversation{}, fmt.Errorf("No tool call found for %s with call_id %s.", it.Type, it.CallID)
			}
			delete(calls, it.CallID)
			c.Turn++
			c.Outputs = append(c.Outputs, outputText(it.Output))
		case "message":
			text := contentText(it.Content)
			if m := cwdTag.FindStringSubmatch(text); m != nil {
				c.WorkDir = m[1]
			} else if it.Role == "user" && !strings.HasPrefix(strings.TrimSpace(text), "<") {
				c.Prompt = text
				c.Said = append(c.Said, "user: "+text)
			} else if it.Role == "assistant" {
				c.Said = append(c.Said, "assistant: "+text)
			}
		}
	}
	for id := range calls {
		return Conversation{}, fmt.Errorf("No tool output found for function call %s.", id)
	}
	return c, nil
}

func contentText(raw json.RawMessage) string {
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return text
	}
	var parts []struct {
		Text string `json:"text"`
	}
	_ = json.Unmarshal(raw, &parts)
	var out []string
	for _, p := range parts {
		out = append(out, p.Text)
	}
	return strings.Join(out, "\n")
}

func outputText(raw json.RawMessage) string {
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return text
	}
	return contentText(raw)
}

// stream sends the reply as Responses API server-sent events.
func (s *Server) stream(w http.ResponseWriter, req request, reply Reply) {
	n := s.NextAnswer()
	w.Header().Set("Content-Type", "text/event-stream")
	flusher, _ := w.(http.Flusher)
	seq := 0
	send := func(data map[string]any) {
		data["sequence_number"] = seq
		seq++
		raw, _ := json.Marshal(data)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", data["type"], raw)
		if flusher != nil {
			flusher.Flush()
		}
	}
	response := map[string]any{"id": fmt.Sprintf("resp_%06d", n), "object": "response", "model": req.Model, "status": "in_progress", "output": []any{}}
	send(map[string]any{"type": "response.created", "response": response})
	var output []any
	add := func(it map[string]any) {
		send(map[string]any{"type": "response.output_item.added", "output_index": len(output), "item": it})
		send(map[string]any{"type": "response.output_item.done", "output_index": len(output), "item": it})
		output = append(output, it)
	}
	if reply.Reasoning != "" {
		add(map[string]any{"type": "reasoning", "id": fmt.Sprintf("rs_%06d", n),
			"summary": []any{map[string]any{"type": "summary_text", "text": reply.Reasoning}}})
	}
	if reply.Text != "" {
		add(map[string]any{"type": "message", "id": fmt.Sprintf("msg_%06d", n), "role": "assistant", "status": "completed",
			"content": []any{map[string]any{"type": "output_text", "text": reply.Text, "annotations": []any{}}}})
	}
	if reply.Exec != "" {
		add(map[string]any{"type": "custom_tool_call", "id": fmt.Sprintf("ctc_%06d", n), "status": "completed",
			"call_id": fmt.Sprintf("call_%06d", n), "name": "exec", "input": reply.Exec})
	}
	response["status"] = "completed"
	response["output"] = output
	response["usage"] = map[string]any{"input_tokens": 100, "input_tokens_details": map[string]any{"cached_tokens": 0},
		"output_tokens": 20, "output_tokens_details": map[string]any{"reasoning_tokens": 0}, "total_tokens": 120}
	send(map[string]any{"type": "response.completed", "response": response})
}

// strictProblem is what strict structured outputs refuse in a schema: an
// object that is open or has optional properties, and a root that is not an
// object.
func strictProblem(raw json.RawMessage, path string) error {
	var node struct {
		Type                 any                        `json:"type"`
		Properties           map[string]json.RawMessage `json:"properties"`
		Required             []string                   `json:"required"`
		AdditionalProperties *bool                      `json:"additionalProperties"`
		Items                json.RawMessage            `json:"items"`
	}
	if err := json.Unmarshal(raw, &node); err != nil {
		return fmt.Errorf("In context=(%s), schema is not an object", path)
	}
	if path == "" && node.Type != "object" {
		return fmt.Errorf("schema must be a JSON Schema of 'type: \"object\"', got 'type: \"%v\"'", node.Type)
	}
	if node.Type == "object" || node.Properties != nil {
		if node.AdditionalProperties == nil || *node.AdditionalProperties {
			return fmt.Errorf("In context=(%s), 'additionalProperties' is required to be supplied and to be false", path)
		}
		for name, sub := range node.Properties {
			if !slices.Contains(node.Required, name) {
				return fmt.Errorf("In context=(%s), 'required' is required to be supplied and to be an array including every key in properties. Missing '%s'", path, name)
			}
			if err := strictProblem(sub, path+"'properties', '"+name+"', "); err != nil {
				return err
			}
		}
	}
	if len(node.Items) > 0 {
		return strictProblem(node.Items, path+"'items', ")
	}
	return nil
}
