// Package usage reads the token usage LLM services report in their
// answers, as the answers stream past, so that spend limits are metered
// from what the broker already sees: OpenAI's and Anthropic's "usage"
// objects, in a JSON answer and in server-sent events (OpenAI's final
// chunk with include_usage; Anthropic's message_start and message_delta).
// The meter reads a copy of the bytes and never changes them; what it
// keeps is counts and a model name, never content.
package usage

import (
	"bytes"
	"encoding/json"
	"strings"
)

const (
	// maxJSON bounds the JSON answer kept to be read at its end.
	maxJSON = 1 << 20
	// maxLine bounds one event line; longer lines are skipped.
	maxLine = 256 << 10
)

// Usage is what an answer reported.
type Usage struct {
	Model        string
	InputTokens  int64
	OutputTokens int64
}

// Meter reads one answer.
type Meter struct {
	sse  bool
	buf  bytes.Buffer
	over bool
	u    Usage
}

// NewMeter meters an answer of contentType.
func NewMeter(contentType string) *Meter {
	return &Meter{sse: strings.HasPrefix(strings.ToLower(strings.TrimSpace(contentType)), "text/event-stream")}
}

// Write reads p (a copy: p is not kept).
func (m *Meter) Write(p []byte) (int, error) {
	if !m.sse {
		if !m.over && m.buf.Len()+len(p) <= maxJSON {
			m.buf.Write(p)
		} else {
			m.over = true
			m.buf.Reset()
		}
		return len(p), nil
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if m.buf.Len()+len(p) <= maxLine {
				m.buf.Write(p)
			} else {
				m.over = true
			}
			break
		}
		if !m.over && m.buf.Len()+i <= maxLine {
			m.buf.Write(p[:i])
			m.line(m.buf.Bytes())
		}
		m.buf.Reset()
		m.over = false
		p = p[i+1:]
	}
	return len(p), nil
}

// Usage is what the answer reported so far (all of it, once it ended).
func (m *Meter) Usage() Usage {
	if !m.sse && !m.over && m.buf.Len() > 0 {
		m.event(m.buf.Bytes())
		m.buf.Reset()
	}
	return m.u
}

func (m *Meter) line(l []byte) {
	l = bytes.TrimSuffix(l, []byte("\r"))
	data, ok := bytes.CutPrefix(l, []byte("data:"))
	if !ok {
		return
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' || !bytes.Contains(data, []byte(`"usage"`)) && !bytes.Contains(data, []byte(`"model"`)) {
		return
	}
	m.event(data)
}

type counts struct {
	// OpenAI chat completions.
	PromptTokens     *int64 `json:"prompt_tokens"`
	CompletionTokens *int64 `json:"completion_tokens"`
	// Anthropic, and OpenAI's responses API.
	InputTokens  *int64 `json:"input_tokens"`
	OutputTokens *int64 `json:"output_tokens"`
}

type event struct {
	Model   string  `json:"model"`
	Usage   *counts `json:"usage"`
	Message *struct {
		Model string  `json:"model"`
		Usage *counts `json:"usage"`
	} `json:"message"`
	Response *struct {
		Model string  `json:"model"`
		Usage *counts `json:"usage"`
	} `json:"response"`
}

// event reads one JSON object. Counts are cumulative in every API read
// here (Anthropic's message_delta carries the output so far), so the
// largest seen is kept.
func (m *Meter) event(data []byte) {
	var e event
	if json.Unmarshal(data, &e) != nil {
		return
	}
	m.take(e.Model, e.Usage)
	if e.Message != nil {
		m.take(e.Message.Model, e.Message.Usage)
	}
	if e.Response != nil {
		m.take(e.Response.Model, e.Response.Usage)
	}
}

func (m *Meter) take(model string, c *counts) {
	if model != "" && len(model) <= 128 {
		m.u.Model = model
	}
	if c == nil {
		return
	}
	for _, p := range []struct {
		v   *int64
		out *int64
	}{{c.PromptTokens, &m.u.InputTokens}, {c.InputTokens, &m.u.InputTokens}, {c.CompletionTokens, &m.u.OutputTokens}, {c.OutputTokens, &m.u.OutputTokens}} {
		if p.v != nil && *p.v > *p.out && *p.v < 1<<40 {
			*p.out = *p.v
		}
	}
}
