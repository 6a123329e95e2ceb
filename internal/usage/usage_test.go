package usage

import (
	"strings"
	"testing"
)

func meter(contentType string, chunks ...string) Usage {
	m := NewMeter(contentType)
	for _, c := range chunks {
		_, _ = m.Write([]byte(c))
	}
	return m.Usage()
}

func TestUsageFromAnswers(t *testing.T) {
	for _, c := range []struct {
		desc        string
		contentType string
		chunks      []string
		want        Usage
	}{
		{"OpenAI chat JSON", "application/json", []string{`{"id":"c1","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,`, `"completion_tokens":30,"total_tokens":42}}`},
			Usage{"gpt-4o-mini", 12, 30}},
		{"OpenAI responses JSON", "application/json", []string{`{"id":"r1","model":"gpt-4.1","output":[],"usage":{"input_tokens":5,"output_tokens":7}}`},
			Usage{"gpt-4.1", 5, 7}},
		{"Anthropic JSON", "application/json", []string{`{"id":"msg_1","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":20,"output_tokens":9}}`},
			Usage{"claude-sonnet-4-5", 20, 9}},
		{"Anthropic SSE split across chunks", "text/event-stream; charset=utf-8", []string{
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"usage is 99\"}}\n\nevent: message_delta\nda",
			"ta: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\r\n\r\n",
		}, Usage{"claude-haiku-4-5", 25, 15}},
		{"OpenAI SSE with include_usage", "text/event-stream", []string{
			"data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
			"data: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n",
		}, Usage{"gpt-4o", 3, 4}},
		{"not JSON", "application/json", []string{"<html>usage</html>"}, Usage{}},
		{"JSON too large to read", "application/json", []string{`{"usage":{"input_tokens":1},"pad":"` + strings.Repeat("x", maxJSON) + `"}`}, Usage{}},
	} {
		if got := meter(c.contentType, c.chunks...); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.desc, got, c.want)
		}
	}
}
