package agent

import (
	"encoding/json"
	"strings"
)

// The events of Claude Code's --output-format stream-json, as far as the
// worker reads them.

type claudeEvent struct {
	Type              string          `json:"type"`
	Subtype           string          `json:"subtype"`
	SessionID         string          `json:"session_id"`
	Model             string          `json:"model"`
	Version           string          `json:"claude_code_version"`
	PermissionMode    string          `json:"permissionMode"`
	Message           claudeMessage   `json:"message"`
	PermissionDenials []claudeDenial  `json:"permission_denials"`
	Errors            json.RawMessage `json:"errors"`
	claudeResult
}

type claudeResult struct {
	IsError          bool            `json:"is_error"`
	StructuredOutput json.RawMessage `json:"structured_output"`
	Result           string          `json:"result"`
	NumTurns         int             `json:"num_turns"`
	DurationMS       float64         `json:"duration_ms"`
	DurationAPIMS    float64         `json:"duration_api_ms"`
	TotalCostUSD     float64         `json:"total_cost_usd"`
	Usage            map[string]any  `json:"usage"`
	APIErrorStatus   any             `json:"api_error_status"`
	subtype          string
	session          string
	errors           []string
}

// claudeMessage is an event's message: an object with content, or a bare
// string. Events are decoded in one pass, so a tool result of tens of MB is
// copied once, as the text it is, not once per level of nesting.
type claudeMessage struct {
	Content claudeContent
}

func (m *claudeMessage) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		return m.Content.UnmarshalJSON(data)
	}
	var obj struct {
		Content claudeContent `json:"content"`
	}
	if err := json.Unmarshal(data, &obj); err != nil {
		return err
	}
	m.Content = obj.Content
	return nil
}

// claudeContent is a message's content: blocks, or a bare string, which is
// one text block.
type claudeContent []claudeBlock

func (c *claudeContent) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		var text string
		if err := json.Unmarshal(data, &text); err != nil {
			return err
		}
		*c = claudeContent{{Type: "text", Text: text}}
		return nil
	}
	var blocks []claudeBlock
	if err := json.Unmarshal(data, &blocks); err != nil {
		return err
	}
	*c = blocks
	return nil
}

type claudeBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	Thinking  string          `json:"thinking"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   toolOutput      `json:"content"`
	IsError   bool            `json:"is_error"`
}

// toolOutput is a tool_result's content as text: a string, or the text of
// its blocks (other blocks, such as images, by their type).
type toolOutput string

func (t *toolOutput) UnmarshalJSON(data []byte) error {
	switch {
	case len(data) > 0 && data[0] == '"':
		var text string
		err := json.Unmarshal(data, &text)
		*t = toolOutput(text)
		return err
	case len(data) > 0 && data[0] == '[':
		var blocks []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(data, &blocks); err != nil {
			return err
		}
		parts := make([]string, 0, len(blocks))
		for _, b := range blocks {
			if b.Type == "text" {
				parts = append(parts, b.Text)
			} else {
				parts = append(parts, "["+b.Type+"]")
			}
		}
		*t = toolOutput(strings.Join(parts, "\n"))
	case string(data) != "null":
		*t = toolOutput(data)
	}
	return nil
}

type claudeDenial struct {
	ToolName string `json:"tool_name"`
}
