package portal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A passed-through call that asks for progress: the remote server is
// given a progress token of the portal's own (sessions are shared by the
// org's agents, and the agent's token is the agent's), and its progress
// notifications reach the agent under the agent's token, as events of
// the agent's answer, before the result.

// progressPass passes one call's progress on to the agent.
type progressPass struct {
	// token is the portal's, which the remote server is given.
	token string
	// agent is the agent's token, as it wrote it.
	agent json.RawMessage
	send  func(message []byte)
}

func newProgressPass(agent json.RawMessage, send func(message []byte)) *progressPass {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return &progressPass{token: "progress-" + hex.EncodeToString(b[:]), agent: agent, send: send}
}

// fromStream says whether data, a message of the call's answer, is a
// progress notification, and passes it on if it is the call's. The
// notification's fields other than the token reach the agent as the
// remote server wrote them.
func (p *progressPass) fromStream(data []byte) bool {
	if p == nil {
		return false
	}
	var msg struct {
		Method string                     `json:"method"`
		ID     json.RawMessage            `json:"id"`
		Params map[string]json.RawMessage `json:"params"`
	}
	if json.Unmarshal(data, &msg) != nil || msg.Method != "notifications/progress" || msg.ID != nil {
		return false
	}
	var token string
	if json.Unmarshal(msg.Params["progressToken"], &token) == nil && token == p.token {
		msg.Params["progressToken"] = p.agent
		p.pass(msg.Params)
	}
	return true
}

// fromSession passes on the call's progress the remote server sent on the
// session's own stream (which the SDK's client reads) instead of the
// call's answer.
func (p *progressPass) fromSession(_ context.Context, n *mcp.ProgressNotificationParams) {
	params := *n
	params.ProgressToken = p.agent
	p.pass(&params)
}

// pass sends the agent a progress notification with params, which name
// the agent's token.
func (p *progressPass) pass(params any) {
	if out, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/progress", "params": params}); err == nil {
		p.send(out)
	}
}

// eventStream answers one call as server-sent events, as the SDK's
// server does: each message one event, flushed as it is written, the
// last one the call's answer.
type eventStream struct {
	w http.ResponseWriter

	mu           sync.Mutex
	begun, ended bool
}

// send writes a message before the answer; none is written after it.
func (e *eventStream) send(message []byte) { e.write(message, false) }

// end writes the call's answer.
func (e *eventStream) end(message []byte) { e.write(message, true) }

func (e *eventStream) write(message []byte, last bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return
	}
	e.ended = last
	if bytes.ContainsAny(message, "\r\n") {
		// An event's data is one line here; a line break inside JSON is
		// whitespace, and compacting keeps every value as written.
		var b bytes.Buffer
		if json.Compact(&b, message) != nil {
			return
		}
		message = b.Bytes()
	}
	if !e.begun {
		e.begun = true
		h := e.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache, no-transform")
		e.w.WriteHeader(http.StatusOK)
	}
	var b bytes.Buffer
	b.Grow(len(message) + 32)
	b.WriteString("event: message\ndata: ")
	b.Write(message)
	b.WriteString("\n\n")
	_, _ = e.w.Write(b.Bytes())
	_ = http.NewResponseController(e.w).Flush()
}
