package anthropictest

import (
	"encoding/json"
	"fmt"
	"net/http"
)

type content struct {
	Type     string  `json:"type"`
	Text     *string `json:"text,omitempty"`
	Thinking *string `json:"thinking,omitempty"`
	Sig      *string `json:"signature,omitempty"`
	ID       string  `json:"id,omitempty"`
	Name     string  `json:"name,omitempty"`
	Input    any     `json:"input,omitempty"`
}

type messageBody struct {
	ID           string         `json:"id"`
	Type         string         `json:"type"`
	Role         string         `json:"role"`
	Model        string         `json:"model"`
	Content      []content      `json:"content"`
	StopReason   *string        `json:"stop_reason"`
	StopSequence *string        `json:"stop_sequence"`
	Usage        map[string]int `json:"usage"`
}

// message builds the assistant message for reply, with fresh ids: the CLI
// merges consecutive messages that share an id.
func (s *Server) message(model string, reply Reply) messageBody {
	n := s.NextAnswer()
	msg := messageBody{ID: fmt.Sprintf("msg_%06d", n), Type: "message", Role: "assistant", Model: model,
		Usage: map[string]int{"input_tokens": 100, "output_tokens": 20}}
	if reply.Thinking != "" {
		sig := "c2lnbmF0dXJl"
		msg.Content = append(msg.Content, content{Type: "thinking", Thinking: &reply.Thinking, Sig: &sig})
	}
	if reply.Text != "" {
		text := reply.Text
		msg.Content = append(msg.Content, content{Type: "text", Text: &text})
	}
	stop := "end_turn"
	for i, t := range reply.Tools {
		var input any = t.Input
		if t.Input == nil {
			input = map[string]any{}
		}
		msg.Content = append(msg.Content, content{Type: "tool_use", ID: fmt.Sprintf("toolu_%06d_%d", n, i), Name: t.Name, Input: input})
		stop = "tool_use"
	}
	msg.StopReason = &stop
	return msg
}

// stream sends msg as the API's server-sent events: message_start, each
// block's start/delta/stop, message_delta with the stop reason, message_stop.
func (s *Server) stream(w http.ResponseWriter, msg messageBody) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher, _ := w.(http.Flusher)
	send := func(event string, data any) {
		raw, _ := json.Marshal(data)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, raw)
		if flusher != nil {
			flusher.Flush()
		}
	}
	start := msg
	start.Content, start.StopReason = []content{}, nil
	start.Usage = map[string]int{"input_tokens": msg.Usage["input_tokens"], "output_tokens": 1}
	send("message_start", map[string]any{"type": "message_start", "message": start})
	for i, c := range msg.Content {
		opening := c
		var delta map[string]any
		switch c.Type {
		case "text":
			empty := ""
			opening.Text = &empty
			delta = map[string]any{"type": "text_delta", "text": *c.Text}
		case "thinking":
			empty := ""
			opening.Thinking, opening.Sig = &empty, nil
			delta = map[string]any{"type": "thinking_delta", "thinking": *c.Thinking}
		case "tool_use":
			opening.Input = map[string]any{}
			raw, _ := json.Marshal(c.Input)
			delta = map[string]any{"type": "input_json_delta", "partial_json": string(raw)}
		}
		send("content_block_start", map[string]any{"type": "content_block_start", "index": i, "content_block": opening})
		send("content_block_delta", map[string]any{"type": "content_block_delta", "index": i, "delta": delta})
		if c.Type == "thinking" {
			send("content_block_delta", map[string]any{"type": "content_block_delta", "index": i,
				"delta": map[string]any{"type": "signature_delta", "signature": *c.Sig}})
		}
		send("content_block_stop", map[string]any{"type": "content_block_stop", "index": i})
	}
	send("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": msg.StopReason, "stop_sequence": nil},
		"usage": map[string]int{"output_tokens": msg.Usage["output_tokens"]}})
	send("message_stop", map[string]any{"type": "message_stop"})
}
