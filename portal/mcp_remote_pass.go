package portal

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
// asking for progress on the stateless protocol, headers the SDK
// refuses) is left to the SDK. A call asking for progress is answered as
// an event stream: the remote server's progress, under the agent's own
// token, then the result, in the order the remote server sent them.

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
	// progress is the agent's progress token, if it asked for progress.
	progress json.RawMessage
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
	if raw, asks := meta["progressToken"]; asks {
		if version >= mcpStatelessVersion || tools[req.tool].paramHeaders || !validRequestID(raw) {
			return req, false // the SDK's server streams the progress
		}
		req.progress = raw
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

// validRequestID says whether raw is a JSON-RPC request's id (or a
// progress token): a string or an integer.
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
	var events *eventStream
	var progress *progressPass
	if req.progress != nil {
		events = &eventStream{w: w}
		progress = newProgressPass(req.progress, events.send)
	}
	var result json.RawMessage
	failed := m.callRemote(r.Context(), call, t.cred, t.name, req.args, func(decided *egress.Grant) (rc *remoteCall, err error) {
		result, rc, err = m.remote.callRaw(r.Context(), org, t, token, req.args, decided, progress)
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
	var b bytes.Buffer
	b.Grow(len(result) + len(req.id) + 40)
	b.WriteString(`{"jsonrpc":"2.0","id":`)
	b.Write(req.id)
	b.WriteString(`,"result":`)
	b.Write(result)
	b.WriteString("}")
	if events != nil {
		events.end(b.Bytes())
		return true
	}
	w.Header().Set("Content-Type", "application/json")
	b.WriteString("\n")
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
// progress, if not nil, passes the call's progress on.
func (r *remoteMCP) callRaw(ctx context.Context, org string, t remoteTool, token string, args json.RawMessage, decided *egress.Grant, progress *progressPass) (json.RawMessage, *remoteCall, error) {
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
		result, err = c.post(ctx, s, rc, t.name, args, progress)
		return err
	})
	return result, rc, err
}

// post sends one tools/call on session s, as the SDK's client would, and
// reads its result from the answer (JSON, or an event stream). On the
// stateless protocol the request carries the client's protocol version,
// info and capabilities in _meta, and names its method and tool in
// headers; a tool whose schema mirrors arguments in headers too is not
// posted here (callRaw). With progress, the request carries the portal's
// progress token and the answer is read as it comes.
func (c *remoteConn) post(ctx context.Context, s *mcp.ClientSession, rc *remoteCall, tool string, args json.RawMessage, progress *progressPass) (json.RawMessage, error) {
	init := s.InitializeResult()
	if init == nil {
		return nil, mcp.ErrConnectionClosed
	}
	version := init.ProtocolVersion
	params := map[string]any{"name": tool, "arguments": args}
	stateless := version >= mcpStatelessVersion
	meta := map[string]any{}
	if stateless {
		meta[mcp.MetaKeyProtocolVersion] = version
		meta[mcp.MetaKeyClientInfo] = remoteClientInfo
		// None, as the client's options say (remoteConn.connect).
		meta[mcp.MetaKeyClientCapabilities] = json.RawMessage(`{}`)
	}
	if progress != nil {
		meta["progressToken"] = progress.token
		// Also when the remote server sends it on the session's own
		// stream rather than the call's.
		c.r.progress.Store(progress.token, progressFunc(progress.fromSession))
		defer c.r.progress.Delete(progress.token)
	}
	if len(meta) > 0 {
		params["_meta"] = meta
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
	switch {
	case answer.Status == http.StatusNotFound && sessionID != "":
		answer.Close()
		return nil, mcp.ErrSessionMissing
	case answer.Status >= 400:
		answer.Close()
		return nil, fmt.Errorf("the remote server answered %d", answer.Status)
	case progress != nil && baseMediaType(answer.Header.Get("Content-Type")) == "text/event-stream":
		// Read as it comes, through the scrubber, so that each
		// notification reaches the agent when the remote server sends it.
		stream := remoteResponse(req, answer).Body // closes answer
		defer stream.Close()
		return resultInEvents(bufio.NewReader(stream), id, progress)
	}
	defer answer.Close()
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
		return resultInEvents(bufio.NewReader(bytes.NewReader(raw)), id, progress)
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

// resultInEvents reads the server-sent events of stream until the one
// answering id, passing on the call's progress (progress, if not nil) as
// it comes.
func resultInEvents(stream *bufio.Reader, id string, progress *progressPass) (json.RawMessage, error) {
	var data []byte
	for {
		line, err := stream.ReadBytes('\n')
		line = bytes.TrimRight(line, "\r\n")
		if bytes.HasPrefix(line, []byte("data:")) {
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))...)
		}
		// An event ends at a blank line, or where the stream does.
		if (len(line) == 0 || err != nil) && len(data) > 0 {
			if !progress.fromStream(data) {
				if res, rerr := resultOf(data, id); !errors.Is(rerr, errNoResult) {
					return res, rerr
				}
			}
			data = data[:0]
		}
		if err == io.EOF {
			return nil, errNoResult
		}
		if err != nil {
			return nil, err
		}
	}
}
