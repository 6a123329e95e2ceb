package portal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
)

// Remote MCP servers. A credential whose service names one (mcp_url)
// offers its tools on /mcp/<org> as <cred>.<tool>. The portal is the
// remote server's MCP client, and every HTTP request that client makes
// goes through the edge's pipeline (remoteTransport): authorized by Vault
// with the agent's token on proxy/<cred>/TOOL/<tool> (TOOL alone for
// listing and the session's own requests), the organization's token
// injected by the engine's sealed injection, the answer scrubbed of the
// credential's secrets. The agent's token is never passed on and the
// remote token never reaches the agent.
//
// One session per credential and server is shared by the agents that may
// use it, as the grant is. Its own requests (the notification stream, its
// end) are authorized with the token of the agent whose call opened it.

const (
	// remoteToolsReuse bounds how long a remote tool list is used when no
	// notifications/tools/list_changed says it changed.
	remoteToolsReuse = 5 * time.Minute
	// remoteSessionReuse bounds one remote session's life.
	remoteSessionReuse = 10 * time.Minute
	// maxRemoteSessions bounds the open sessions; past it the oldest go.
	maxRemoteSessions = 1000
)

type remoteKey struct{ org, cred, url string }

// remoteClientInfo is the portal's name to remote servers.
var remoteClientInfo = &mcp.Implementation{Name: "credentials-portal", Title: "Credentials broker", Version: "1"}

// remoteMCP holds the portal's sessions with remote MCP servers.
type remoteMCP struct {
	edge *brokerHandler
	// changed is told the org whose remote tool list changed.
	changed func(org string)

	mu    sync.Mutex
	conns map[remoteKey]*remoteConn
	// progress are the calls waiting for progress, by the progress token
	// the portal gave the remote server: where to pass it on.
	progress sync.Map
}

// progressFunc passes a remote server's progress on to the agent.
type progressFunc func(context.Context, *mcp.ProgressNotificationParams)

// progressWatch passes one call's progress on and knows when it is done.
type progressWatch struct {
	pass progressFunc

	mu   sync.Mutex
	last time.Time
	done bool
}

func (w *progressWatch) notify(ctx context.Context, p *mcp.ProgressNotificationParams) {
	w.pass(ctx, p)
	w.mu.Lock()
	w.last, w.done = time.Now(), p.Total > 0 && p.Progress >= p.Total
	w.mu.Unlock()
}

// settle waits, after the result, for the notifications behind it: until
// the total is reached or none came for progressQuiet (counted from the
// result at the earliest), at most progressSettle.
func (w *progressWatch) settle() {
	start := time.Now()
	deadline := start.Add(progressSettle)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		last := w.last
		if last.Before(start) {
			last = start
		}
		done, quiet := w.done, time.Since(last) > progressQuiet
		w.mu.Unlock()
		if done || quiet {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const (
	progressQuiet  = 100 * time.Millisecond
	progressSettle = 500 * time.Millisecond
)

func newRemoteMCP(edge *brokerHandler, changed func(org string)) *remoteMCP {
	return &remoteMCP{edge: edge, changed: changed, conns: map[remoteKey]*remoteConn{}}
}

// remoteConn is one credential's session with its remote server.
type remoteConn struct {
	key remoteKey
	r   *remoteMCP
	// mu guards the session and the tool list, and is held while
	// connecting and listing (not while calling a tool).
	mu       sync.Mutex
	session  *mcp.ClientSession
	opened   time.Time
	tools    []*mcp.Tool
	listedAt time.Time
	// stale is set by a list_changed notification, which arrives while
	// a request may hold mu.
	stale atomic.Bool
	// opener authorizes the session's requests made for no call.
	opener atomic.Pointer[remoteCall]
}

func (r *remoteMCP) conn(org, cred, url string) *remoteConn {
	k := remoteKey{org, cred, url}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.conns[k]; ok {
		return c
	}
	if len(r.conns) >= maxRemoteSessions {
		for key, c := range r.conns {
			go c.close()
			delete(r.conns, key)
		}
	}
	c := &remoteConn{key: k, r: r}
	r.conns[k] = c
	return c
}

// remoteCall is one agent call's part in the remote session's requests:
// whose token authorizes them, for which tool, and what the edge refused.
type remoteCall struct {
	org, cred, token string
	// tool is the tool called, "" for listing.
	tool string
	// decided is the grant Vault decided for the tool call (its approval
	// rules checked on it), taken by the call's request to the remote
	// server so that the call costs one decision, not two.
	decided *egress.Grant

	mu      sync.Mutex
	refusal *egress.Error
	// dead says the remote server refused the grant's token even after
	// a refresh: a person must reconnect the credential.
	dead bool
	// status is the remote server's refusal of a request, if any.
	status int
	// missingScope is the scope a 403 insufficient_scope asked for (the
	// MCP spec's step-up): the grant must be widened, which only a person
	// can consent to.
	missingScope string
}

type remoteCallKey struct{}

// takeDecided takes the grant decided for the call, nil when there is
// none (listing, a session's own requests) or a request took it already.
func (rc *remoteCall) takeDecided() *egress.Grant {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	g := rc.decided
	rc.decided = nil
	return g
}

func (rc *remoteCall) refused(e *egress.Error, dead bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.refusal, rc.dead = e, dead
}

// insufficientScope is the scope of a Bearer error="insufficient_scope"
// challenge (RFC 6750 section 3.1), "" when there is none.
func insufficientScope(challenges []string) string {
	cs, err := oauthex.ParseWWWAuthenticate(challenges)
	if err != nil {
		return ""
	}
	for _, c := range cs {
		if c.Scheme == "bearer" && c.Params["error"] == "insufficient_scope" {
			if sc := strings.TrimSpace(c.Params["scope"]); sc != "" {
				if len(sc) > 200 {
					sc = sc[:200] + "…"
				}
				return sc
			}
			return "(not named)"
		}
	}
	return ""
}

func (rc *remoteCall) scopeNeeded() string {
	if rc == nil {
		return ""
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.missingScope
}

func (rc *remoteCall) outcome() (*egress.Error, bool, int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.refusal, rc.dead, rc.status
}

// tools lists the remote server's tools, reused for remoteToolsReuse or
// until the server says they changed.
func (r *remoteMCP) tools(ctx context.Context, org, cred, url, token string) ([]*mcp.Tool, *remoteCall, error) {
	c := r.conn(org, cred, url)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tools != nil && !c.stale.Load() && time.Since(c.listedAt) < remoteToolsReuse {
		return c.tools, nil, nil
	}
	var rc *remoteCall
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		rc = &remoteCall{org: org, cred: cred, token: token}
		cctx := context.WithValue(ctx, remoteCallKey{}, rc)
		c.stale.Store(false)
		var s *mcp.ClientSession
		if s, err = c.sessionLocked(cctx, rc); err == nil {
			var tools []*mcp.Tool
			if tools, err = listTools(cctx, s); err == nil {
				c.tools, c.listedAt = tools, time.Now()
				return tools, rc, nil
			}
		}
		c.closeLocked()
		if refusal, _, _ := rc.outcome(); refusal != nil {
			break // the edge's refusal: a new session would meet it too
		}
	}
	return nil, rc, err
}

func listTools(ctx context.Context, s *mcp.ClientSession) ([]*mcp.Tool, error) {
	var out []*mcp.Tool
	for t, err := range s.Tools(ctx, nil) {
		if err != nil {
			return nil, err
		}
		out = append(out, t)
		if len(out) > 1000 {
			return nil, errors.New("the remote server lists more than 1000 tools")
		}
	}
	return out, nil
}

// call calls one remote tool. A session the server ended (or that broke)
// is opened again once: the call was not made on it. decided, if not nil,
// is Vault's decision of the call, for its first request; call zeroes it.
func (r *remoteMCP) call(ctx context.Context, org, cred, url, token, tool string, args any, progress progressFunc, decided *egress.Grant) (*mcp.CallToolResult, *remoteCall, error) {
	params := &mcp.CallToolParams{Name: tool, Arguments: args}
	if progress != nil {
		// A token of the portal's own: the agent's is the agent's, and
		// sessions are shared by the org's agents.
		var b [16]byte
		_, _ = rand.Read(b[:])
		pt := "progress-" + hex.EncodeToString(b[:])
		w := &progressWatch{pass: progress}
		r.progress.Store(pt, progressFunc(w.notify))
		defer r.progress.Delete(pt)
		// The client hands notifications to their handler apart from the
		// result, which may come first: the ones just behind it are
		// still passed on before the agent's call ends.
		defer w.settle()
		params.SetProgressToken(pt)
	}
	var res *mcp.CallToolResult
	rc, err := r.onSession(ctx, org, cred, url, token, tool, decided, func(ctx context.Context, _ *remoteConn, s *mcp.ClientSession, _ *remoteCall) (err error) {
		res, err = s.CallTool(ctx, params)
		return err
	})
	return res, rc, err
}

// onSession makes one remote call with do on the credential's session. A
// session the server ended (or that broke) is opened again once: the call
// was not made on it. decided, if not nil, is Vault's decision of the
// call, for its first request; onSession zeroes it.
func (r *remoteMCP) onSession(ctx context.Context, org, cred, url, token, tool string, decided *egress.Grant,
	do func(context.Context, *remoteConn, *mcp.ClientSession, *remoteCall) error) (*remoteCall, error) {
	defer func() {
		if decided != nil {
			decided.Material.Zero()
		}
	}()
	c := r.conn(org, cred, url)
	var rc *remoteCall
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		rc = &remoteCall{org: org, cred: cred, token: token, tool: tool}
		cctx := context.WithValue(ctx, remoteCallKey{}, rc)
		c.mu.Lock()
		s, serr := c.sessionLocked(cctx, rc)
		c.mu.Unlock()
		if serr != nil {
			c.close()
			return rc, serr
		}
		// Handed over once the session is open, so that the session's own
		// requests (initialize) do not take it.
		rc.mu.Lock()
		rc.decided, decided = decided, nil
		rc.mu.Unlock()
		err = do(cctx, c, s, rc)
		if left := rc.takeDecided(); left != nil {
			left.Material.Zero()
		}
		if err == nil {
			return rc, nil
		}
		if !errors.Is(err, mcp.ErrSessionMissing) && !errors.Is(err, mcp.ErrConnectionClosed) {
			return rc, err
		}
		c.dropSession(s)
	}
	return rc, err
}

// sessionLocked is the open session, or a new one opened with rc's token.
func (c *remoteConn) sessionLocked(ctx context.Context, rc *remoteCall) (*mcp.ClientSession, error) {
	if c.session != nil && time.Since(c.opened) < remoteSessionReuse {
		return c.session, nil
	}
	c.closeLocked()
	c.opener.Store(rc)
	client := mcp.NewClient(remoteClientInfo, &mcp.ClientOptions{
		// None: the portal has no roots, and no model or person to ask
		// for sampling or elicitation on the remote server's behalf.
		Capabilities: &mcp.ClientCapabilities{},
		ProgressNotificationHandler: func(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
			if f, ok := c.r.progress.Load(fmt.Sprint(req.Params.ProgressToken)); ok {
				f.(progressFunc)(ctx, req.Params)
			}
		},
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			c.stale.Store(true)
			if c.r.changed != nil {
				c.r.changed(c.key.org)
			}
		},
	})
	transport := &mcp.StreamableClientTransport{
		Endpoint:   c.key.url,
		HTTPClient: &http.Client{Transport: &remoteTransport{conn: c}},
		MaxRetries: 2,
	}
	s, err := client.Connect(ctx, transport, nil)
	if err != nil {
		return nil, err
	}
	c.session, c.opened = s, time.Now()
	return s, nil
}

// dropSession forgets s if it is still the open session.
func (c *remoteConn) dropSession(s *mcp.ClientSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session == s {
		c.closeLocked()
	}
}

func (c *remoteConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked()
}

func (c *remoteConn) closeLocked() {
	if c.session != nil {
		go func(s *mcp.ClientSession) { _ = s.Close() }(c.session)
	}
	c.session, c.tools = nil, nil
}

// closeAll ends every session, when the portal stops.
func (r *remoteMCP) closeAll() {
	r.mu.Lock()
	conns := r.conns
	r.conns = map[remoteKey]*remoteConn{}
	r.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// remoteTransport sends the remote session's HTTP requests through the
// edge's pipeline.
type remoteTransport struct {
	conn *remoteConn
}

var errNoRemoteCall = errors.New("no agent's call authorizes this request")

func (t *remoteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rc, _ := req.Context().Value(remoteCallKey{}).(*remoteCall)
	if rc == nil {
		rc = t.conn.opener.Load()
	}
	if rc == nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, errNoRemoteCall
	}
	return t.conn.roundTrip(req, rc)
}

// roundTrip sends one request of the session through the edge's pipeline,
// noting in rc what the edge or the remote server refused.
func (c *remoteConn) roundTrip(req *http.Request, rc *remoteCall) (*http.Response, error) {
	answer, err := c.exchange(req, rc)
	if err != nil {
		return nil, err
	}
	return remoteResponse(req, answer), nil
}

// exchange is roundTrip's answer before it is read: the caller reads it
// through its scrubber (Answer.ReadAll) and closes it.
func (c *remoteConn) exchange(req *http.Request, rc *remoteCall) (*edgeAnswer, error) {
	answer, fail, dead := c.r.edge.remoteRoundTrip(req, rc)
	if fail != nil {
		rc.refused(fail, dead)
		return nil, fail
	}
	if answer.Status >= 400 {
		rc.mu.Lock()
		rc.status = answer.Status
		if answer.Status == http.StatusForbidden {
			rc.missingScope = insufficientScope(answer.Header.Values("WWW-Authenticate"))
		}
		rc.mu.Unlock()
	}
	return answer, nil
}

// remoteRoundTrip sends one request of a remote session: authorized by
// Vault with the agent's token, the organization's token injected. A 401
// from the remote server (a token revoked or cut short at the provider)
// has the engine refresh once and the request sent again; dead says the
// second was refused too. The answer is the remote server's, unread.
func (h *brokerHandler) remoteRoundTrip(req *http.Request, rc *remoteCall) (*edgeAnswer, *egress.Error, bool) {
	if req.Body != nil {
		defer req.Body.Close()
	}
	if h.key == nil {
		return nil, &egress.Error{Status: http.StatusServiceUnavailable, Permanent: true,
			Msg: "this portal has no edge key: the operator sets " + egress.EdgeKeyEnv + " (portal edge-key prints a pair)"}, false
	}
	call := &edgeCall{org: rc.org, cred: rc.cred, token: rc.token, tokenHeader: "Authorization",
		rest: req.URL.Scheme + "://" + req.URL.Host + req.URL.EscapedPath()}
	if rc.tool != "" {
		call.decoded = "/" + rc.tool
	}
	ctx := req.Context()
	started := time.Now()
	for attempt := 0; ; attempt++ {
		call.upstreamRefused = attempt > 0
		var grant *egress.Grant
		if attempt == 0 {
			grant = rc.takeDecided()
		}
		if grant == nil {
			var fail *egress.Error
			if grant, fail = h.authorize(ctx, call, contract.MethodTool); fail != nil {
				return nil, fail, false
			}
		}
		body := io.Reader(http.NoBody)
		if req.GetBody != nil {
			b, err := req.GetBody()
			if err != nil {
				grant.Material.Zero()
				return nil, &egress.Error{Status: http.StatusBadGateway, Msg: "the request to the remote MCP server could not be read again"}, false
			}
			body = b
		} else if attempt == 0 && req.Body != nil {
			body = req.Body
		}
		answer, fail := h.send(ctx, grant, edgeRequest{
			call: call, method: req.Method, rawQuery: req.URL.RawQuery,
			header: req.Header, body: body, contentLength: req.ContentLength,
		})
		grant.Material.Zero()
		if fail != nil {
			return nil, fail, false
		}
		if answer.Status != http.StatusUnauthorized {
			if rc.tool != "" {
				h.trail.note(call, grant, trailLine{At: started.UTC(), Ingress: "mcp", Tool: rc.tool,
					Status: answer.Status, Bytes: max(answer.Length, 0), DurationMS: msSince(started)})
			}
			return answer, nil, false
		}
		answer.Close()
		if attempt > 0 || (req.GetBody == nil && req.Body != nil) {
			return nil, &egress.Error{Status: http.StatusUnauthorized, Permanent: true,
				Msg: "the remote MCP server refused credential " + rc.cred + "'s token, also after a refresh"}, true
		}
	}
}

// remoteResponse is the answer as the MCP client reads it: its body
// through the scrubber, bounded by broker_max_body, the answer closed when
// the client closes the body.
func remoteResponse(req *http.Request, a *edgeAnswer) *http.Response {
	pr, pw := io.Pipe()
	go func() {
		defer a.Close()
		sw := a.Scrubber().NewWriter(pw)
		buf := make([]byte, edgeCopyBuffer)
		defer clear(buf)
		var total int64
		max := a.MaxBody()
		for {
			n, err := a.Body.Read(buf)
			if n > 0 {
				total += int64(n)
				if total > max {
					pw.CloseWithError(fmt.Errorf("the remote MCP server's answer is over broker_max_body (%d bytes)", max))
					return
				}
				if _, werr := sw.Write(buf[:n]); werr != nil {
					pw.CloseWithError(werr)
					return
				}
			}
			if err == io.EOF {
				pw.CloseWithError(sw.Close())
				return
			}
			if err != nil {
				pw.CloseWithError(errors.New("the remote MCP server's answer broke off"))
				return
			}
		}
	}()
	header := a.Header.Clone()
	header.Del("Content-Length")
	return &http.Response{
		Status: fmt.Sprintf("%d %s", a.Status, http.StatusText(a.Status)), StatusCode: a.Status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: header, Body: pr, ContentLength: -1, Request: req,
	}
}
