package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
)

// The MCP server: /mcp/<org> speaks MCP over Streamable HTTP to agents that
// hold a Vault token (Authorization: Bearer). Its tools are the
// credentials this token may use (Vault decides, see mcp_tools.go): one
// per HTTP credential, which calls the service through the edge's own code
// path, one per SMTP credential, which sends mail through the engine, and
// list_credentials. The agent never holds a secret; each tool call is
// authorized by Vault with the agent's token, so audit and last use see it.
//
// It is stateless (no MCP session): each request builds its server from
// the token's tools, so a token refreshed by a client's header helper is
// simply the next request's token.

// maxToolAnswer bounds the body a tool call returns to the model; the
// rest is cut with a note.
const maxToolAnswer = 100 << 10

// toolAnswerHeaders are the service's headers a tool call returns.
var toolAnswerHeaders = []string{"Content-Type", "Location", "Link", "Retry-After", "X-Ratelimit-Remaining", "X-Ratelimit-Reset", "Request-Id", "X-Request-Id"}

type mcpServer struct {
	broker    *brokerHandler
	auth      *mcpAuth
	publicURL func() string
	logger    *slog.Logger
	lists     toolLists
	remote    *remoteMCP
	handler   http.Handler
	streaming http.Handler
}

type mcpServerKey struct{}

// mcpCall is one tool call's org and token (the current request's: a
// server is reused across a token's requests).
type mcpCall struct {
	org   string
	token string
}

// callOf is the tool call's org and the token of the request it came in.
func callOf(org string, req *mcp.CallToolRequest) *mcpCall {
	token := ""
	if req.Extra != nil {
		token, _ = brokerToken(req.Extra.Header)
	}
	return &mcpCall{org: org, token: token}
}

func newMCPServer(broker *brokerHandler, auth *mcpAuth, publicURL func() string, logger *slog.Logger) *mcpServer {
	m := &mcpServer{broker: broker, auth: auth, publicURL: publicURL, logger: logger}
	// A remote server's new tool list is the next request's, for every
	// token of the org.
	m.remote = newRemoteMCP(broker, func(org string) { m.lists.forget(func(l *toolList) bool { return l.org == org }) })
	m.handler = mcp.NewStreamableHTTPHandler(m.serverFor, &mcp.StreamableHTTPOptions{
		Stateless:    true,
		JSONResponse: true,
		// ServeHTTP guards against DNS rebinding knowing the public name
		// a reverse proxy on loopback sends as Host; the SDK's guard
		// refuses every such request.
		DisableLocalhostProtection: true,
		// Tool inputs are small; bodies larger than this belong on the edge.
		MaxRequestBodyBytes: mcpMaxBody,
	})
	// A call that asks for progress is answered as an event stream, which
	// can carry the progress notifications before the result.
	m.streaming = mcp.NewStreamableHTTPHandler(m.serverFor, &mcp.StreamableHTTPOptions{
		Stateless:                  true,
		DisableLocalhostProtection: true,
		MaxRequestBodyBytes:        mcpMaxBody,
	})
	return m
}

const mcpMaxBody = 8 << 20

// handlerFor is the handler of r, whose body is body: the event stream
// for a request that asks for progress (and takes an event stream), else
// plain JSON.
func (m *mcpServer) handlerFor(r *http.Request, body []byte) http.Handler {
	if r.Method == http.MethodPost && strings.Contains(r.Header.Get("Accept"), "text/event-stream") && bytes.Contains(body, []byte(`"progressToken"`)) {
		return m.streaming
	}
	return m.handler
}

// peekBody reads a POST's body for the portal's own look at it (up to one
// byte past mcpMaxBody; nil for other requests, or a body that could not
// be read) and puts it back whole for the SDK.
func peekBody(r *http.Request) []byte {
	if r.Method != http.MethodPost || r.Body == nil {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, mcpMaxBody+1))
	r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
	if err != nil {
		return nil
	}
	return body
}

func (m *mcpServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	org, ok := strings.CutPrefix(r.URL.Path, "/mcp/")
	if !ok || !contract.ValidOrgName(org) {
		brokerFail(w, &egress.Error{Status: http.StatusNotFound, Permanent: true, Msg: "use /mcp/<org>"})
		return
	}
	if !m.hostAllowed(r) {
		brokerFail(w, &egress.Error{Status: http.StatusForbidden, Permanent: true, Msg: "invalid Host header: the portal answers on loopback only to loopback names and its public URL's"})
		return
	}
	token, _ := brokerToken(r.Header)
	if token == "" {
		m.unauthorized(w, r, org, "", "sign in by OAuth (see WWW-Authenticate), or send the agent's Vault token as Authorization: Bearer <token>")
		return
	}
	list, fail := m.toolsFor(r.Context(), org, token)
	if fail != nil {
		if fail.Status == http.StatusUnauthorized {
			m.unauthorized(w, r, org, "invalid_token", fail.Msg)
			return
		}
		brokerFail(w, fail)
		return
	}
	if list.resource != "" && list.resource != m.auth.resourceOf(r, org) {
		// RFC 8707: a token is for the resource it was minted for.
		m.unauthorized(w, r, org, "invalid_token", "this token was issued for "+list.resource+", not this MCP server")
		return
	}
	if list.server == nil {
		// Another org's agent, or a person's token: nothing here is its.
		brokerFail(w, &egress.Error{Status: http.StatusForbidden, Permanent: true, Msg: "permission denied: this token may use no credential of org " + org})
		return
	}
	body := peekBody(r)
	if m.passRemote(w, r, body, org, token, list) {
		return
	}
	m.handlerFor(r, body).ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), mcpServerKey{}, list.server)))
}

// hostAllowed is the MCP spec's guard against DNS rebinding: a request
// that came in on a loopback address names a loopback host or the
// portal's public one (a reverse proxy's), not a name a page resolved
// to 127.0.0.1.
func (m *mcpServer) hostAllowed(r *http.Request) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok || local == nil || !isLoopback(hostname(local.String())) || isLoopback(hostname(r.Host)) {
		return true
	}
	public, err := url.Parse(m.publicURL())
	return err == nil && public.Hostname() != "" && strings.EqualFold(hostname(r.Host), public.Hostname())
}

// hostname is addr without its port and IPv6 brackets.
func hostname(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return strings.Trim(addr, "[]")
}

// unauthorized answers 401 with the challenge that tells an MCP client
// where to sign in (RFC 9728).
func (m *mcpServer) unauthorized(w http.ResponseWriter, r *http.Request, org, oauthErr, msg string) {
	w.Header().Set("WWW-Authenticate", m.auth.challenge(r, org, oauthErr))
	brokerFail(w, unauthorized(msg))
}

// serverFor is the MCP server of the request's token.
func (m *mcpServer) serverFor(r *http.Request) *mcp.Server {
	s, _ := r.Context().Value(mcpServerKey{}).(*mcp.Server)
	return s
}

// newServer builds the MCP server of one token's credentials in org, and
// the remote tools it offers by name.
func (m *mcpServer) newServer(org string, creds []*agentCred) (*mcp.Server, map[string]remoteTool) {
	s := mcp.NewServer(serverInfo(org), &mcp.ServerOptions{
		Instructions: "Each tool uses one of org " + org + "'s credentials without showing it: call services with the HTTP tools, send mail with send_email. list_credentials says which work now and where a person fixes those that do not.",
	})
	s.AddTool(&mcp.Tool{
		Name:        "list_credentials",
		Title:       "List credentials",
		Description: "The credentials this agent may use: name, tool, service, type, status and, when one needs a person, the portal page where they fix it.",
		InputSchema: json.RawMessage(`{"type": "object", "properties": {}, "additionalProperties": false}`),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return m.listCredentials(org, creds), nil
	})
	names := toolNames(creds)
	remote := map[string]remoteTool{}
	for _, c := range creds {
		name := names[c.Name]
		for _, t := range c.remote {
			if m.addRemoteTool(s, org, c, t) {
				remote[remoteToolName(c.Name, t.Name)] = remoteTool{cred: c, name: t.Name, paramHeaders: namesParamHeaders(t.InputSchema)}
			}
		}
		if c.Use != "mail" && !c.HTTP {
			continue // remote tools only
		}
		if c.Use == "mail" {
			s.AddTool(&mcp.Tool{Name: name, Title: "Send email with " + c.Name, Description: mailToolDescription(c), InputSchema: mailToolSchema},
				func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
					return m.sendEmail(ctx, callOf(org, req), c, req), nil
				})
			continue
		}
		s.AddTool(&mcp.Tool{Name: name, Title: "Call " + serviceTitle(c) + " with " + c.Name, Description: httpToolDescription(c), InputSchema: httpToolSchema},
			func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				return m.callService(ctx, callOf(org, req), c, req), nil
			})
	}
	return s, remote
}

// toolNames names each credential's tool: an HTTP credential by its own
// name, an SMTP one send_email (send_email_<cred> when there are several);
// a name that would collide gets call_ in front.
func toolNames(creds []*agentCred) map[string]string {
	mail := 0
	for _, c := range creds {
		if c.Use == "mail" {
			mail++
		}
	}
	out := map[string]string{}
	for _, c := range creds {
		switch {
		case c.Use == "mail" && mail == 1:
			out[c.Name] = "send_email"
		case c.Use == "mail":
			out[c.Name] = "send_email_" + c.Name
		case c.Name == "list_credentials" || strings.HasPrefix(c.Name, "send_email"):
			out[c.Name] = "call_" + c.Name
		default:
			out[c.Name] = c.Name
		}
	}
	return out
}

func serviceTitle(c *agentCred) string {
	if c.ServiceName != "" {
		return c.ServiceName
	}
	return c.Service
}

func httpToolDescription(c *agentCred) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Call %s with credential %s, injected by the broker (you never see it).", serviceTitle(c), c.Name)
	if c.ServiceDesc != "" {
		fmt.Fprintf(&b, " %s", c.ServiceDesc)
	}
	if c.Description != "" {
		fmt.Fprintf(&b, " This credential: %s.", strings.TrimSuffix(c.Description, "."))
	}
	if c.BaseURL != "" {
		fmt.Fprintf(&b, " Paths are relative to %s.", c.BaseURL)
	}
	if c.DocsURL != "" {
		fmt.Fprintf(&b, " API docs: %s.", c.DocsURL)
	}
	if len(c.Rules) > 0 {
		fmt.Fprintf(&b, " Only these calls are allowed: %s.", strings.Join(c.Rules, ", "))
	}
	if why := c.blocked(); why != "" {
		fmt.Fprintf(&b, " Not usable now: %s.", why)
	} else if c.Status != "" && c.Status != "active" {
		fmt.Fprintf(&b, " Status: %s (%s).", c.Status, c.Reason)
	}
	b.WriteString(" Answers: status, selected headers and the body (JSON or text), cut beyond 100 KiB.")
	return b.String()
}

func mailToolDescription(c *agentCred) string {
	d := fmt.Sprintf("Send one email with SMTP credential %s (the password stays in Vault).", c.Name)
	if c.Description != "" {
		d += " This credential: " + strings.TrimSuffix(c.Description, ".") + "."
	}
	return d + " Addresses may carry a display name (Ops <ops@example.com>); attachments are base64."
}

var httpToolSchema = json.RawMessage(`{
  "type": "object",
  "properties": {
    "method": {"type": "string", "enum": ` + methodsJSON() + `, "default": "GET"},
    "path": {"type": "string", "description": "The service's path, relative to its base URL, e.g. /v1/balance; may include ?query."},
    "query": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Query parameters, added to any in path."},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Request headers; authorization headers are set by the broker and dropped here."},
    "json": {"description": "A JSON request body (sent as application/json)."},
    "text": {"type": "string", "description": "A text request body, when the body is not JSON."}
  },
  "required": ["path"],
  "additionalProperties": false
}`)

var mailToolSchema = json.RawMessage(`{
  "type": "object",
  "properties": {
    "from": {"type": "string", "description": "Sender address, e.g. Ops <ops@example.com>."},
    "to": {"type": "array", "items": {"type": "string"}},
    "cc": {"type": "array", "items": {"type": "string"}},
    "bcc": {"type": "array", "items": {"type": "string"}},
    "reply_to": {"type": "array", "items": {"type": "string"}},
    "subject": {"type": "string"},
    "text": {"type": "string", "description": "Plain-text body."},
    "html": {"type": "string", "description": "HTML body."},
    "attachments": {"type": "array", "items": {"type": "object", "properties": {
      "filename": {"type": "string"}, "content": {"type": "string", "description": "base64"}, "content_type": {"type": "string"}
    }, "required": ["filename", "content"], "additionalProperties": false}}
  },
  "required": ["from", "subject"],
  "additionalProperties": false
}`)

// credPageURL is where a person sees and fixes a credential.
func (m *mcpServer) credPageURL(org, cred string) string {
	return strings.TrimSuffix(m.publicURL(), "/") + "/orgs/" + org + "/creds/" + cred
}

// needsPerson is the tool error of a credential a person must fix first.
func (m *mcpServer) needsPerson(call *mcpCall, c *agentCred, why string) *mcp.CallToolResult {
	return toolError(fmt.Sprintf("%s. A person fixes it in the portal: %s", why, m.credPageURL(call.org, c.Name)))
}

func (m *mcpServer) listCredentials(org string, creds []*agentCred) *mcp.CallToolResult {
	names := toolNames(creds)
	type line struct {
		Name         string `json:"name"`
		Tool         string `json:"tool,omitempty"`
		Service      string `json:"service"`
		Type         string `json:"type"`
		Status       string `json:"status"`
		StatusReason string `json:"status_reason,omitempty"`
		PortalURL    string `json:"portal_url"`
		// RemoteTools are the tools of the service's MCP server it may
		// call; RemoteError why they could not be listed.
		RemoteTools []string `json:"remote_tools,omitempty"`
		RemoteError string   `json:"remote_tools_error,omitempty"`
	}
	out := []line{}
	for _, c := range creds {
		l := line{Name: c.Name, Service: c.Service, Type: c.Type, Status: c.Status, StatusReason: c.Reason, PortalURL: m.credPageURL(org, c.Name),
			RemoteError: c.remoteErr}
		if c.HTTP || c.Use == "mail" {
			l.Tool = names[c.Name]
		}
		for _, t := range c.remote {
			l.RemoteTools = append(l.RemoteTools, remoteToolName(c.Name, t.Name))
		}
		if c.Unusable != "" {
			l.Status, l.StatusReason = "unavailable", c.Unusable
		}
		out = append(out, l)
	}
	return toolJSON(map[string]any{"credentials": out})
}

type httpToolInput struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   map[string]string `json:"query"`
	Headers map[string]string `json:"headers"`
	JSON    json.RawMessage   `json:"json"`
	Text    *string           `json:"text"`
}

// callService makes one call through the edge's own pipeline (h.do), so
// every guard rail of the edge (authorization by Vault, path rules, dial
// guard, header policy, scrubbing, limits) applies to it unchanged.
func (m *mcpServer) callService(ctx context.Context, call *mcpCall, c *agentCred, req *mcp.CallToolRequest) *mcp.CallToolResult {
	if why := c.blocked(); why != "" {
		return m.needsPerson(call, c, why)
	}
	in, msg := parseHTTPToolInput(req.Params.Arguments)
	if msg != "" {
		return toolError(msg)
	}
	start := time.Now()
	answer, status := m.callEdge(ctx, call, c, in)
	m.broker.logger.Info("broker", "method", in.Method, "path", "/broker/"+call.org+"/"+c.Name+"/…", "status", status,
		"via", "mcp", "duration_ms", time.Since(start).Milliseconds())
	return answer
}

// callEdge sends the tool call's request and turns the answer into the
// tool's result; status is the one for the log.
func (m *mcpServer) callEdge(ctx context.Context, call *mcpCall, c *agentCred, in *httpTool) (*mcp.CallToolResult, int) {
	edgeCall, fail := m.broker.newCall(call.org, c.Name, in.path, call.token, "Authorization")
	var answer *edgeAnswer
	if fail == nil {
		answer, fail = m.broker.do(ctx, edgeRequest{
			call: edgeCall, method: in.Method, rawQuery: in.query, header: in.header,
			body: in.body, contentLength: in.length,
		})
	}
	if fail != nil {
		msg := fmt.Sprintf("the broker refused the call (%d): %s", fail.Status, fail.Msg)
		if c.Status != "" && c.Status != "active" {
			return m.needsPerson(call, c, fmt.Sprintf("%s; credential %s needs attention (%s)", msg, c.Name, c.Reason)), fail.Status
		}
		return toolError(msg), fail.Status
	}
	defer answer.Close()
	return m.toolAnswer(answer, in.Method), answer.Status
}

// httpTool is a tool call's request, checked and in the edge's terms.
type httpTool struct {
	httpToolInput
	path, query string
	header      http.Header
	body        io.Reader
	length      int64
}

// parseHTTPToolInput reads a tool call's arguments; msg says what is
// wrong with them.
func parseHTTPToolInput(args json.RawMessage) (*httpTool, string) {
	var in httpTool
	if err := json.Unmarshal(args, &in.httpToolInput); err != nil {
		return nil, "the arguments do not match the tool's input schema: " + err.Error()
	}
	if in.Method == "" {
		in.Method = http.MethodGet
	}
	if !contract.ValidMethod(in.Method) {
		return nil, contract.MethodRule()
	}
	path, rawQuery, _ := strings.Cut(in.Path, "?")
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, "the query in path does not parse: " + err.Error()
	}
	for k, v := range in.Query {
		q.Add(k, v)
	}
	// The path as the edge takes it from an agent's request line: as
	// escaped, so an encoded slash or dot segment is refused as there.
	u, err := url.Parse("http://edge" + path)
	if err != nil {
		return nil, "the path cannot be sent: " + err.Error()
	}
	in.path = u.EscapedPath()
	in.query = q.Encode()
	in.header = http.Header{}
	for k, v := range in.Headers {
		in.header.Set(k, v)
	}
	contentType := ""
	switch {
	case len(in.JSON) > 0 && in.Text != nil:
		return nil, "give json or text as the body, not both"
	case len(in.JSON) > 0:
		in.body, in.length, contentType = bytes.NewReader(in.JSON), int64(len(in.JSON)), "application/json"
	case in.Text != nil:
		in.body, in.length, contentType = strings.NewReader(*in.Text), int64(len(*in.Text)), "text/plain; charset=utf-8"
	}
	if in.header.Get("Upgrade") != "" {
		return nil, "protocol upgrades (WebSocket) are not brokered: use the service's HTTP API"
	}
	if contentType != "" && in.header.Get("Content-Type") == "" {
		in.header.Set("Content-Type", contentType)
	}
	return &in, ""
}

// toolAnswer turns the service's answer into the tool's result, its body
// read through the scrubber up to maxToolAnswer.
func (m *mcpServer) toolAnswer(a *edgeAnswer, method string) *mcp.CallToolResult {
	headers := map[string]string{}
	for _, h := range toolAnswerHeaders {
		if v := a.Header.Values(h); len(v) > 0 {
			headers[strings.ToLower(h)] = strings.Join(v, ", ")
		}
	}
	out := map[string]any{"status": a.Status, "headers": headers}
	var raw []byte
	var err error
	if method != http.MethodHead {
		raw, err = a.ReadAll(min(maxToolAnswer, a.MaxBody()))
	}
	truncated := errors.Is(err, egress.ErrAnswerOver)
	switch {
	case !truncated && err == nil && json.Valid(raw) && len(raw) > 0:
		out["body"] = json.RawMessage(raw)
	default:
		out["body"] = strings.ToValidUTF8(string(raw), "\uFFFD")
	}
	switch {
	case truncated && a.MaxBody() <= maxToolAnswer:
		out["truncated"] = true
		out["note"] = "the service's answer broke off, or exceeded broker_max_body"
	case truncated:
		out["truncated"] = true
		out["note"] = fmt.Sprintf("the body is cut at %d bytes of %d or more: ask for less (paging, fields, a range)", maxToolAnswer, maxToolAnswer+1)
	case err != nil:
		out["truncated"] = true
		out["note"] = "the service's answer broke off, or exceeded broker_max_body"
	}
	res := toolJSON(out)
	res.IsError = a.Status >= 400
	return res
}

// sendEmail sends one message through the edge's mail call, as /send does.
func (m *mcpServer) sendEmail(ctx context.Context, call *mcpCall, c *agentCred, req *mcp.CallToolRequest) *mcp.CallToolResult {
	if why := c.blocked(); why != "" {
		return m.needsPerson(call, c, why)
	}
	mailCall, fail := m.broker.newCall(call.org, c.Name, mailSendPath, call.token, "Authorization")
	var receipt *mailReceipt
	if fail == nil {
		receipt, fail = m.broker.doMail(ctx, mailCall, req.Params.Arguments)
	}
	if fail != nil {
		msg := "sending failed (" + fmt.Sprint(fail.Status) + "): " + fail.Msg
		if c.Status != "" && c.Status != "active" {
			return m.needsPerson(call, c, fmt.Sprintf("%s; credential %s needs attention (%s)", msg, c.Name, c.Reason))
		}
		return toolError(msg)
	}
	return toolJSON(receipt)
}

func toolError(msg string) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: msg}}}
}

func toolJSON(v any) *mcp.CallToolResult {
	raw, err := json.Marshal(v)
	if err != nil {
		return toolError("encoding the answer failed")
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(raw)}}}
}

// methodsJSON is contract.Methods as a JSON array, for the tool schema.
func methodsJSON() string {
	raw, _ := json.Marshal(contract.Methods)
	return string(raw)
}
