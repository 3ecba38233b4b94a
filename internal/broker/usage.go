package broker

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"strings"
)

// Price is what a model costs, in dollars per million tokens.
type Price struct {
	Input, Output, CacheWrite, CacheRead float64
}

// Prices are the models' list prices, by the longest prefix of the model's
// name that matches; update them here when a provider changes its list.
var Prices = map[string]Price{
	"claude-opus-4":     {Input: 15, Output: 75, CacheWrite: 18.75, CacheRead: 1.5},
	"claude-sonnet-4":   {Input: 3, Output: 15, CacheWrite: 3.75, CacheRead: 0.3},
	"claude-3-7-sonnet": {Input: 3, Output: 15, CacheWrite: 3.75, CacheRead: 0.3},
	"claude-3-5-haiku":  {Input: 0.8, Output: 4, CacheWrite: 1, CacheRead: 0.08},
	"claude-haiku-4":    {Input: 1, Output: 5, CacheWrite: 1.25, CacheRead: 0.1},
	"gpt-5":             {Input: 1.25, Output: 10, CacheRead: 0.125},
	"gpt-5-mini":        {Input: 0.25, Output: 2, CacheRead: 0.025},
	"gpt-4.1":           {Input: 2, Output: 8, CacheRead: 0.5},
	"o3":                {Input: 2, Output: 8, CacheRead: 0.5},
	"o4-mini":           {Input: 1.1, Output: 4.4, CacheRead: 0.275},
}

// UnknownModelPrice is charged for a model the table doesn't know: the
// dearest, so a budget is never overrun by a model missing from the table.
var UnknownModelPrice = Price{Input: 15, Output: 75, CacheWrite: 18.75, CacheRead: 1.5}

// PriceOf is model's price.
func PriceOf(model string) Price {
	best, found := "", false
	for prefix := range Prices {
		if strings.HasPrefix(model, prefix) && len(prefix) > len(best) {
			best, found = prefix, true
		}
	}
	if !found {
		return UnknownModelPrice
	}
	return Prices[best]
}

// Usage is what one run's requests used, as the provider's answers said.
type Usage struct {
	Requests         int     `json:"requests"`
	InputTokens      int64   `json:"input_tokens"`
	OutputTokens     int64   `json:"output_tokens"`
	CacheWriteTokens int64   `json:"cache_creation_input_tokens"`
	CacheReadTokens  int64   `json:"cache_read_input_tokens"`
	CostUSD          float64 `json:"cost_usd"`
}

func (u Usage) plus(v Usage) Usage {
	return Usage{Requests: u.Requests + v.Requests, InputTokens: u.InputTokens + v.InputTokens,
		OutputTokens: u.OutputTokens + v.OutputTokens, CacheWriteTokens: u.CacheWriteTokens + v.CacheWriteTokens,
		CacheReadTokens: u.CacheReadTokens + v.CacheReadTokens, CostUSD: u.CostUSD + v.CostUSD}
}

// Tokens is every token counted.
func (u Usage) Tokens() int64 {
	return u.InputTokens + u.OutputTokens + u.CacheWriteTokens + u.CacheReadTokens
}

// tokens is one answer's count, in the fields both providers use.
type tokens struct {
	Input      int64 `json:"input_tokens"`
	Output     int64 `json:"output_tokens"`
	CacheWrite int64 `json:"cache_creation_input_tokens"`
	CacheRead  int64 `json:"cache_read_input_tokens"`
	// OpenAI reports cached input inside input_tokens, and says how much.
	Details struct {
		Cached int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
}

// meter reads the usage out of an answer as it passes, and adds it to the
// grant when the answer is done. Anthropic sends usage in message_start
// (input) and message_delta (output so far) events or in the JSON answer;
// OpenAI in response.completed or the JSON answer.
type meter struct {
	body  io.ReadCloser
	g     *Grant
	sse   bool
	buf   bytes.Buffer
	model string
	t     tokens
	done  bool
}

// maxMeteredJSON bounds what is kept of a JSON answer to read its usage.
const maxMeteredJSON = 8 << 20

func (m *meter) Read(p []byte) (int, error) {
	n, err := m.body.Read(p)
	if n > 0 && m.buf.Len() < maxMeteredJSON {
		m.buf.Write(p[:n])
		if m.sse {
			m.scanEvents()
		}
	}
	if err == io.EOF {
		m.finish()
	}
	return n, err
}

func (m *meter) Close() error {
	m.finish()
	return m.body.Close()
}

// scanEvents reads the complete lines of a stream so far.
func (m *meter) scanEvents() {
	data := m.buf.Bytes()
	last := bytes.LastIndexByte(data, '\n')
	if last < 0 {
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(data[:last+1]))
	sc.Buffer(make([]byte, 64<<10), maxMeteredJSON)
	for sc.Scan() {
		if payload, ok := bytes.CutPrefix(sc.Bytes(), []byte("data:")); ok {
			m.event(bytes.TrimSpace(payload))
		}
	}
	m.buf.Next(last + 1)
}

// event takes the usage of one streamed event.
func (m *meter) event(payload []byte) {
	var e struct {
		Type    string `json:"type"`
		Message *struct {
			Model string `json:"model"`
			Usage tokens `json:"usage"`
		} `json:"message"`
		Usage    *tokens `json:"usage"`
		Response *struct {
			Model string  `json:"model"`
			Usage *tokens `json:"usage"`
		} `json:"response"`
	}
	if json.Unmarshal(payload, &e) != nil {
		return
	}
	switch {
	case e.Type == "message_start" && e.Message != nil:
		m.model, m.t = e.Message.Model, e.Message.Usage
	case e.Type == "message_delta" && e.Usage != nil:
		// Output so far, cumulative.
		m.t.Output = e.Usage.Output
	case e.Response != nil && e.Response.Usage != nil:
		m.model, m.t = e.Response.Model, *e.Response.Usage
	}
}

func (m *meter) finish() {
	if m.done {
		return
	}
	m.done = true
	if !m.sse {
		var answer struct {
			Model string  `json:"model"`
			Usage *tokens `json:"usage"`
		}
		if json.Unmarshal(m.buf.Bytes(), &answer) == nil && answer.Usage != nil {
			m.model, m.t = answer.Model, *answer.Usage
		}
	}
	m.g.add(m.model, m.t)
}
