package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/clankteam/credentials/internal/egress"
)

// A remote tool's call passed through as bytes. The SDK's server and
// client decode a tools/call and its result several times each (its
// JSON decoder allocates a large buffer per decode), which cost more than
// Vault's decision of the call. So the portal reads the agent's request
// once, has Vault decide it and its approval as for any remote call
// (callRemote), and sends the remote server the same request with the
// tool's own name on the credential's session; the remote server's result
// comes back as it wrote it, through the edge's scrubber. A request this
// cannot answer exactly as the SDK would (a batch, another method, a call
// asking for progress, headers the SDK refuses) is left to the SDK.

const (
	mcpProtocolHeader = "Mcp-Protocol-Version"
	mcpSessionHeader  = "Mcp-Session-Id"
	mcpMethodHeader   = "Mcp-Method"
	mcpNameHeader     = "Mcp-Name"
	// mcpStatelessVersion is the first protocol version whose requests
	// carry the client's protocol version, info and capabilities in
	// _meta, and whose results say their resultType.
	mcpStatelessVersion = "2026-07-28"
)

// passRequest is the part of an agent's JSON-RPC request passRemote reads.
type passRequest struct {
	id   json.RawMessage
	tool string
	args json.RawMessage
}

// readPassRequest reads r, whose body is body (peekBody's), as a remote
// tool's call the portal can pass, or says no (ok false).
func readPassRequest(r *http.Request, body []byte, tools map[string]remoteTool) (req passRequest, ok bool) {
	if r.Method != http.MethodPost || len(tools) == 0 || body == nil || baseMediaType(r.Header.Get("Content-Type")) != "application/json" {
		return req, false
	}
	if jsonOK, streamOK := acceptsMCP(r.Header.Values("Accept")); !jsonOK || !streamOK {
		return req, false
	}
	version := r.Header.Get(mcpProtocolHeader)
	if version != "" && !slices.Contains(mcp.SupportedProtocolVersions(), version) {
		return req, false
	}
	if len(body) > mcpMaxBody {
		return req, false
	}
	// Exact member names, as the SDK reads them.
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil || string(top["jsonrpc"]) != `"2.0"` || string(top["method"]) != `"tools/call"` {
		return req, false
	}
	var params map[string]json.RawMessage
	if json.Unmarshal(top["params"], &params) != nil || json.Unmarshal(params["name"], &req.tool) != nil {
		return req, false
	}
	if _, ok := tools[req.tool]; !ok {
		return req, false
	}
	if req.id = top["id"]; !validRequestID(req.id) {
		return req, false
	}
	var meta map[string]json.RawMessage
	if raw, ok := params["_meta"]; ok && json.Unmarshal(raw, &meta) != nil {
		return req, false
	}
	if _, asks := meta["progressToken"]; asks {
		return req, false // the SDK's server streams the progress
	}
	var metaVersion string
	if raw, ok := meta[mcp.MetaKeyProtocolVersion]; ok && json.Unmarshal(raw, &metaVersion) != nil {
		return req, false
	}
	if version >= mcpStatelessVersion && metaVersion != version || version < mcpStatelessVersion && metaVersion != "" && metaVersion != version {
		return req, false // the SDK answers the mismatch
	}
	if version >= mcpStatelessVersion {
		// The stateless protocol's request headers name the method and
		// the tool, and mirror the arguments a schema's x-mcp-header
		// names; the SDK checks those.
		if r.Header.Get(mcpMethodHeader) != "tools/call" || r.Header.Get(mcpNameHeader) != req.tool || tools[req.tool].paramHeaders {
			return req, false
		}
	}
	req.args = params["arguments"]
	if a := bytes.TrimSpace(req.args); len(a) > 0 && a[0] != '{' {
		return req, false
	}
	return req, true
}

// validRequestID says whether raw is a JSON-RPC request's id: a string
// or an integer.
func validRequestID(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return false
	}
	if raw[0] == '"' {
		var s string
		return json.Unmarshal(raw, &s) == nil
	}
	_, err := strconv.ParseInt(string(raw), 10, 64)
	return err == nil
}

func baseMediaType(v string) string {
	t, _, err := mime.ParseMediaType(v)
	if err != nil {
		return ""
	}
	return t
}

// acceptsMCP says whether an Accept header takes JSON and event streams,
// as a Streamable HTTP request's must.
func acceptsMCP(values []string) (jsonOK, streamOK bool) {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			switch baseMediaType(strings.TrimSpace(part)) {
			case "application/json", "application/*":
				jsonOK = true
			case "text/event-stream", "text/*":
				streamOK = true
			case "*/*":
				jsonOK, streamOK = true, true
			}
		}
	}
	return jsonOK, streamOK
}

// passRemote answers r if it is a remote tool's call it can pass; false
// leaves r to the SDK.
func (m *mcpServer) passRemote(w http.ResponseWriter, r *http.Request, body []byte, org, token string, list *toolList) bool {
	req, ok := readPassRequest(r, body, list.remote)
	if !ok {
		return false
	}
	t := list.remote[req.tool]
	call := &mcpCall{org: org, token: token}
	var result json.RawMessage
	failed := m.callRemote(r.Context(), call, t.cred, t.name, req.args, func(decided *egress.Grant) (rc *remoteCall, err error) {
		result, rc, err = m.remote.callRaw(r.Context(), org, t, token, req.args, decided)
		return rc, err
	})
	if failed != nil {
		var err error
		if result, err = json.Marshal(failed); err != nil {
			result = json.RawMessage(`{"content":[{"type":"text","text":"encoding the answer failed"}],"isError":true}`)
		}
	}
	if version := r.Header.Get(mcpProtocolHeader); version >= mcpStatelessVersion {
		result = m.asStatelessResult(result, org)
	}
	w.Header().Set("Content-Type", "application/json")
	var b bytes.Buffer
	b.Grow(len(result) + len(req.id) + 40)
	b.WriteString(`{"jsonrpc":"2.0","id":`)
	b.Write(req.id)
	b.WriteString(`,"result":`)
	b.Write(result)
	b.WriteString("}\n")
	_, _ = w.Write(b.Bytes())
	return true
}

// asStatelessResult is result as the SDK's server sends it to a client of
// the stateless protocol: resultType complete, and the server's info in
// _meta unless the remote server put its own there.
func (m *mcpServer) asStatelessResult(result json.RawMessage, org string) json.RawMessage {
	var top map[string]json.RawMessage
	if json.Unmarshal(result, &top) != nil {
		return result
	}
	var meta map[string]json.RawMessage
	if raw, ok := top["_meta"]; ok && json.Unmarshal(raw, &meta) != nil {
		return result
	}
	if meta == nil {
		meta = map[string]json.RawMessage{}
	}
	if _, ok := meta[mcp.MetaKeyServerInfo]; !ok {
		meta[mcp.MetaKeyServerInfo], _ = json.Marshal(serverInfo(org))
		top["_meta"], _ = json.Marshal(meta)
	}
	top["resultType"] = json.RawMessage(`"complete"`)
	out, err := json.Marshal(top)
	if err != nil {
		return result
	}
	return out
}

// serverInfo is /mcp/<org>'s name to its clients.
func serverInfo(org string) *mcp.Implementation {
	return &mcp.Implementation{Name: "credentials", Title: "Credentials for " + org, Version: "1"}
}

// passCallID numbers the portal's own requests to remote servers. Its
// ids are strings, so they never meet the integer ids of the SDK's client
// on the same session.
var passCallID atomic.Uint64

// callRaw calls remote tool t with args as they came (a JSON object, or
// none) and answers the remote server's result as it wrote it.
func (r *remoteMCP) callRaw(ctx context.Context, org string, t remoteTool, token string, args json.RawMessage, decided *egress.Grant) (json.RawMessage, *remoteCall, error) {
	if len(bytes.TrimSpace(args)) == 0 || string(bytes.TrimSpace(args)) == "null" {
		args = json.RawMessage(`{}`) // as the SDK's client sends none
	}
	var result json.RawMessage
	rc, err := r.onSession(ctx, org, t.cred.Name, t.cred.MCPURL, token, t.name, decided, func(ctx context.Context, c *remoteConn, s *mcp.ClientSession, rc *remoteCall) error {
		if init := s.InitializeResult(); t.paramHeaders && init != nil && init.ProtocolVersion >= mcpStatelessVersion {
			// Its requests mirror arguments in headers the SDK derives
			// from the tool's schema: the SDK's client sends it.
			res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: t.name, Arguments: args})
			if err == nil {
				result, err = json.Marshal(res)
			}
			return err
		}
		var err error
		result, err = c.post(ctx, s, rc, t.name, args)
		return err
	})
	return result, rc, err
}

// post sends one tools/call on session s, as the SDK's client would, and
// reads its result from the answer (JSON, or an event stream). On the
// stateless protocol the request carries the client's protocol version,
// info and capabilities in _meta, and names its method and tool in
// headers; a tool whose schema mirrors arguments in headers too is not
// posted here (callRaw).
func (c *remoteConn) post(ctx context.Context, s *mcp.ClientSession, rc *remoteCall, tool string, args json.RawMessage) (json.RawMessage, error) {
	init := s.InitializeResult()
	if init == nil {
		return nil, mcp.ErrConnectionClosed
	}
	version := init.ProtocolVersion
	params := map[string]any{"name": tool, "arguments": args}
	stateless := version >= mcpStatelessVersion
	if stateless {
		params["_meta"] = map[string]any{
			mcp.MetaKeyProtocolVersion: version,
			mcp.MetaKeyClientInfo:      remoteClientInfo,
			// None, as the client's options say (remoteConn.connect).
			mcp.MetaKeyClientCapabilities: json.RawMessage(`{}`),
		}
	}
	id := fmt.Sprintf("portal-%d", passCallID.Add(1))
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.key.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set(mcpProtocolHeader, version)
	if stateless {
		req.Header.Set(mcpMethodHeader, "tools/call")
		req.Header.Set(mcpNameHeader, tool)
	}
	sessionID := s.ID()
	if sessionID != "" {
		req.Header.Set(mcpSessionHeader, sessionID)
	}
	answer, err := c.exchange(req, rc)
	if err != nil {
		return nil, err
	}
	defer answer.Close()
	switch {
	case answer.Status == http.StatusNotFound && sessionID != "":
		return nil, mcp.ErrSessionMissing
	case answer.Status >= 400:
		return nil, fmt.Errorf("the remote server answered %d", answer.Status)
	}
	// Read here, not through a pipe to another goroutine as the SDK's
	// client reads: a result is one message, bounded by broker_max_body.
	raw, err := answer.ReadAll(answer.MaxBody())
	if errors.Is(err, egress.ErrAnswerOver) {
		return nil, fmt.Errorf("the remote MCP server's answer is over broker_max_body (%d bytes)", answer.MaxBody())
	}
	if err != nil {
		return nil, errors.New("the remote MCP server's answer broke off")
	}
	switch baseMediaType(answer.Header.Get("Content-Type")) {
	case "application/json":
		return resultOf(raw, id)
	case "text/event-stream":
		return resultInStream(raw, id)
	}
	return nil, errors.New("the remote server answered neither JSON nor an event stream")
}

// errNoResult: the answer ended without the call's result.
var errNoResult = errors.New("the remote server's answer ended without the call's result")

// resultOf is the result in the JSON-RPC message raw if it answers id:
// the remote server's error as a *jsonrpc.Error, and errNoResult when raw
// is another message (a notification, a request of the server's).
func resultOf(raw []byte, id string) (json.RawMessage, error) {
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int64  `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &msg); err != nil {
		return nil, fmt.Errorf("the remote server's answer is not JSON-RPC: %w", err)
	}
	var got string
	if json.Unmarshal(msg.ID, &got) != nil || got != id {
		return nil, errNoResult
	}
	if msg.Error != nil {
		return nil, &jsonrpc.Error{Code: msg.Error.Code, Message: msg.Error.Message}
	}
	if r := bytes.TrimSpace(msg.Result); len(r) == 0 || r[0] != '{' {
		return nil, errors.New("the remote server's result is not an object")
	}
	var kind struct {
		ResultType string `json:"resultType"`
	}
	if json.Unmarshal(msg.Result, &kind) == nil && kind.ResultType == "input_required" {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the tool asks for input (elicitation or sampling), which the broker does not give"}
	}
	return msg.Result, nil
}

// resultInStream reads the server-sent events of stream, the whole answer
// (post reads it bounded), until the one answering id.
func resultInStream(stream []byte, id string) (json.RawMessage, error) {
	var data []byte
	for line := range bytes.Lines(stream) {
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if len(data) > 0 {
				if res, err := resultOf(data, id); !errors.Is(err, errNoResult) {
					return res, err
				}
				data = data[:0]
			}
		case bytes.HasPrefix(line, []byte("data:")):
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))...)
		}
	}
	if len(data) > 0 {
		return resultOf(data, id)
	}
	return nil, errNoResult
}
