package portal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/internal/usage"
)

// The edge: /broker/{org}/{cred}/{path...} takes any method and answers
// like the service itself, so an agent (or a service's SDK with its base URL
// set here) talks to it as to the service. Bytes stream both ways; Vault's
// request pipeline carries only the authorization. Each call is authorized
// by Vault with the agent's own token on the Vault path that names its
// method and path (orgs/<org>/proxy/<cred>/<METHOD>/<path>), so Vault's ACL
// and the agent's rules decide. The injection comes from the engine sealed
// to this edge's key; the portal holds no Vault token, and a secret is in
// its memory only for the call.

// edgeVaultTimeout bounds one call to Vault for an authorization or an
// injection; the service call itself is bounded by broker_timeout.
const edgeVaultTimeout = 30 * time.Second

// brokerTokenHeaders are the headers SDKs put their API key in, besides
// Authorization: an agent's SDK sends its Vault token there.
var brokerTokenHeaders = []string{"X-Vault-Token", "X-Api-Key", "Api-Key"}

// edgeCopyBuffer is the size of one read from the service; each read is
// passed on (and flushed) at once, so streamed events are not held.
const edgeCopyBuffer = 32 << 10

// brokerHandler is the edge.
type brokerHandler struct {
	vaultAddr string
	vault     *http.Client
	key       *egress.EdgePrivateKey
	// publicURL is the portal's public base, for broker URLs in Location
	// and Link.
	publicURL func() string
	logger    *slog.Logger
	sealed    sealedCache
	checks    *capabilityChecks
	// roots are the CAs services are checked against; nil: the system's.
	roots *x509.CertPool

	// clientsMu guards clients: one pooled client per set of private
	// targets the engine reports (in practice, one).
	clientsMu sync.Mutex
	clients   map[string]*http.Client

	// trail reports agents' calls to the engine (trail.go); leases are
	// the calls limits allow, leased from the engine (broker_limits.go).
	trail  *trailReporter
	leases *callLeases
}

// newBrokerHandler serves /broker/ against the Vault at vaultAddr. TLS
// settings for Vault come from the environment (VAULT_CACERT, ...) as for
// every Vault client. Without an edge key it answers every call with a
// message that says what the operator must set.
func newBrokerHandler(vaultAddr string, key *egress.EdgePrivateKey, publicURL func() string, logger *slog.Logger) *brokerHandler {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if cfg := api.DefaultConfig(); cfg != nil && cfg.Error == nil {
		if vt, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
			t = vt.Clone()
		}
	}
	// Agents call concurrently; keep enough connections to Vault open that
	// none is set up per call.
	t.MaxIdleConns = 512
	t.MaxIdleConnsPerHost = 256
	if logger == nil {
		logger = slog.Default()
	}
	h := &brokerHandler{
		vaultAddr: strings.TrimSuffix(vaultAddr, "/"),
		vault:     &http.Client{Transport: t, Timeout: edgeVaultTimeout},
		key:       key,
		publicURL: publicURL,
		logger:    logger,
		sealed:    newSealedCache(),
		clients:   map[string]*http.Client{},
	}
	h.checks = newCapabilityChecks(h.askVault)
	h.trail = &trailReporter{h: h, batches: map[string]*trailBatch{}}
	h.leases = &callLeases{h: h, byToken: map[string]*callLease{}}
	return h
}

func (h *brokerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	status := h.serve(w, r)
	h.logger.Info("broker", "method", r.Method, "path", brokerLogPath(r), "status", status,
		"duration_ms", time.Since(start).Milliseconds())
}

// edgeCall is one call's parts, as they are worked out.
type edgeCall struct {
	org, cred string
	// rest is the service path as the caller escaped it; decoded as
	// Vault's ACL sees it.
	rest, decoded string
	token         string
	tokenHeader   string
	// upstreamRefused says the service refused the injected token just
	// now: the engine is asked again, and refreshes the grant once.
	upstreamRefused bool
}

func (c *edgeCall) mount() string { return contract.Mount(c.org) + "/" }

// serve handles one call and returns the status sent, for the log.
func (h *brokerHandler) serve(w http.ResponseWriter, r *http.Request) (status int) {
	start := time.Now()
	call, fail := h.parse(r)
	if fail != nil {
		return brokerFail(w, fail)
	}
	if h.isMailCall(r.Context(), call, r.Method) {
		return h.sendMail(w, r, call)
	}
	grant, fail := h.authorize(r.Context(), call, r.Method)
	if fail != nil {
		return brokerFail(w, fail)
	}
	defer grant.Material.Zero()
	cw := &countingWriter{ResponseWriter: w}
	defer func() {
		h.trail.note(call, grant, trailLine{At: start.UTC(), Ingress: "edge", Method: r.Method, Path: call.decoded,
			Status: status, Bytes: cw.n, DurationMS: msSince(start)})
	}()
	body, held := h.approvalGate(cw, r, call, grant)
	if held != 0 {
		return held
	}
	contentLength := r.ContentLength
	if body != r.Body {
		contentLength = int64(body.(*bytes.Reader).Len())
	}
	if websocket, _ := isWebSocketCall(r); websocket {
		return h.webSocket(cw, r, grant, call, r.URL.RawQuery)
	}
	// The server's own read deadline is for pages; a brokered upload may
	// take as long as broker_timeout allows. Full duplex: the transport may
	// still be reading the request body (if only to see its end) when the
	// answer starts, and HTTP/1 would otherwise close the body once the
	// answer's headers are out, failing the upload and the answer with it.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(grant.Timeout()))
	_ = rc.EnableFullDuplex()

	answer, fail := h.send(r.Context(), grant, edgeRequest{
		call: call, method: r.Method, rawQuery: r.URL.RawQuery,
		header: r.Header, body: body, contentLength: contentLength,
	})
	if fail != nil {
		return brokerFail(cw, fail)
	}
	defer answer.Close()
	return h.respond(cw, r.Method, answer)
}

// parse checks what can be checked before Vault is asked: the route, the
// method, the token's presence and the path's normal form. Nothing of the
// body is read before the call is authorized.
func (h *brokerHandler) parse(r *http.Request) (*edgeCall, *egress.Error) {
	org, cred, rest, ok := splitBrokerPath(r.URL.EscapedPath())
	if !ok {
		return nil, &egress.Error{Status: http.StatusNotFound, Permanent: true, Msg: "use /broker/<org>/<credential>/<path of the service>"}
	}
	if !contract.ValidMethod(r.Method) {
		return nil, &egress.Error{Status: http.StatusMethodNotAllowed, Permanent: true, Msg: contract.MethodRule()}
	}
	if _, fail := isWebSocketCall(r); fail != nil {
		return nil, fail
	}
	token, from := brokerToken(r.Header)
	if token == "" {
		return nil, unauthorized("send your Vault token as Authorization: Bearer <token>, X-Vault-Token, or the header your service's SDK puts its key in")
	}
	return h.newCall(org, cred, rest, token, from)
}

// newCall is one call's parts once its path is known to be in normal form
// and this edge can open the engine's answers.
func (h *brokerHandler) newCall(org, cred, rest, token, tokenHeader string) (*edgeCall, *egress.Error) {
	decoded, err := egress.CleanPath(rest)
	if err != nil {
		return nil, asEgressError(err)
	}
	if h.key == nil {
		return nil, &egress.Error{Status: http.StatusServiceUnavailable, Permanent: true,
			Msg: "this portal has no edge key: the operator sets " + egress.EdgeKeyEnv + " (portal edge-key prints a pair)"}
	}
	return &edgeCall{org: org, cred: cred, rest: rest, decoded: decoded, token: token, tokenHeader: tokenHeader}, nil
}

// edgeRequest is one call to a service through the edge, typed: the HTTP
// handler makes one from the agent's request, MCP's tools from a tool
// call's arguments.
type edgeRequest struct {
	call          *edgeCall
	method        string
	rawQuery      string
	header        http.Header
	body          io.Reader
	contentLength int64
	// proxied: the caller reached the service's own URL through the
	// forward proxy, so the answer's links stay the service's.
	proxied bool
}

// edgeAnswer is a service's answer on its way to the agent; the reader
// takes its body through the scrubber and closes it.
type edgeAnswer struct {
	*egress.Answer
	cancel context.CancelFunc
	// meter reads the usage the answer reports, when spend limits hold;
	// settle tells the engine, before the answer's end reaches the agent,
	// so the agent's next call is decided on it.
	meter  *usage.Meter
	settle func(usage.Usage)
}

// metered reads p into the answer's usage meter, if any.
func (a *edgeAnswer) metered(p []byte) {
	if a.meter != nil {
		_, _ = a.meter.Write(p)
	}
}

// settleUsage reports what the meter read.
func (a *edgeAnswer) settleUsage() {
	if a.meter == nil || a.settle == nil {
		return
	}
	if u := a.meter.Usage(); u.InputTokens > 0 || u.OutputTokens > 0 {
		a.settle(u)
	}
	a.settle = nil
}

func (a *edgeAnswer) Close() {
	a.Answer.Close()
	a.cancel()
}

// do has Vault authorize r and sends it: the edge's call for those that
// are not an HTTP request to /broker/ (MCP's tools).
func (h *brokerHandler) do(ctx context.Context, r edgeRequest) (*edgeAnswer, *egress.Error) {
	start := time.Now()
	grant, fail := h.authorize(ctx, r.call, r.method)
	if fail != nil {
		return nil, fail
	}
	defer grant.Material.Zero()
	if contract.AnyApprovalRuleHolds(grant.ApprovalRules, r.method, r.call.decoded) {
		var body []byte
		var err error
		if r.body != nil {
			body, err = io.ReadAll(io.LimitReader(r.body, contract.MaxApprovalBody+1))
		}
		if err != nil || len(body) > contract.MaxApprovalBody {
			return nil, &egress.Error{Status: http.StatusRequestEntityTooLarge, Permanent: true, Msg: "a call that needs a person's approval carries at most 1 MiB"}
		}
		if held := h.matchApproval(ctx, r.call, grant, r.method, r.rawQuery, body); held != nil {
			return nil, held
		}
		r.body, r.contentLength = bytes.NewReader(body), int64(len(body))
	}
	answer, fail := h.send(ctx, grant, r)
	line := trailLine{At: start.UTC(), Ingress: "mcp", Method: r.method, Path: r.call.decoded, DurationMS: msSince(start)}
	if fail == nil {
		line.Status, line.Bytes = answer.Status, max(answer.Length, 0)
	}
	h.trail.note(r.call, grant, line)
	return answer, fail
}

// send takes an authorized call through the egress pipeline's steps:
// check, prepare (inject), send; the answer's headers are scrubbed and
// point at the broker. grant's material is no longer needed once it
// returns.
func (h *brokerHandler) send(ctx context.Context, grant *egress.Grant, r edgeRequest) (*edgeAnswer, *egress.Error) {
	timeout := grant.Timeout()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	out, fail := h.prepare(ctx, grant, r)
	if fail != nil {
		cancel()
		return nil, fail
	}
	answer, err := out.Send(h.upstream(grant.PrivateTargets), timeout)
	if err != nil {
		out.Scrubber.Zero()
		cancel()
		return nil, asEgressError(err)
	}
	if !r.proxied {
		answer.PointAtBroker(egress.BrokerBase(h.publicURL(), r.call.org, r.call.cred))
	}
	a := &edgeAnswer{Answer: answer, cancel: cancel}
	if grant.MeterUsage && len(grant.ReportKey) > 0 {
		a.meter = usage.NewMeter(answer.Header.Get("Content-Type"))
		call, key := r.call, slices.Clone(grant.ReportKey)
		a.settle = func(u usage.Usage) { h.reportSpend(call, key, u) }
	}
	return a, nil
}

// prepare takes an authorized call through the pipeline's check and
// prepare steps: the outgoing request, injected, bounded by ctx.
func (h *brokerHandler) prepare(ctx context.Context, grant *egress.Grant, r edgeRequest) (*egress.Outgoing, *egress.Error) {
	target := r.call.rest
	if r.rawQuery != "" {
		target += "?" + r.rawQuery
	}
	checked, err := egress.Check(grant, egress.Request{
		Method: r.method, Target: target, Header: r.header,
		Body: r.body, ContentLength: r.contentLength, CallerToken: r.call.token,
	})
	if err != nil {
		return nil, asEgressError(err)
	}
	out, err := checked.Prepare(ctx, grant.Material)
	if err != nil {
		return nil, asEgressError(err)
	}
	return out, nil
}

// respond streams the answer to the agent.
func (h *brokerHandler) respond(w http.ResponseWriter, method string, a *edgeAnswer) int {
	for k, vs := range a.Header {
		w.Header()[k] = vs
	}
	if method == http.MethodHead {
		w.WriteHeader(a.Status)
		return a.Status
	}
	if a.Length >= 0 && a.Length <= smallAnswer && !a.Encoded {
		h.writeWhole(w, a)
		return a.Status
	}
	w.WriteHeader(a.Status)
	h.stream(w, a, a.Scrubber(), a.MaxBody())
	return a.Status
}

// smallAnswer is the largest answer of known length that is read whole
// and sent with its length in one write, rather than streamed in chunks.
const smallAnswer = 64 << 10

// writeWhole sends a small answer of known length in one piece, with its
// (scrubbed) length, which SDKs and proxies on the way like to see.
func (h *brokerHandler) writeWhole(w http.ResponseWriter, a *edgeAnswer) {
	buf := make([]byte, a.Length)
	if _, err := io.ReadFull(a.Body, buf); err != nil {
		clear(buf)
		// Cut short by the service: end the connection rather than pass
		// a truncated body off as whole.
		panic(http.ErrAbortHandler)
	}
	a.metered(buf)
	a.settleUsage()
	out, changed := a.Scrubber().Bytes(buf)
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(a.Status)
	_, _ = w.Write(out)
	clear(buf)
	if changed {
		clear(out)
	}
}

// stream copies the answer through the scrubber, flushing each read so a
// stream's events reach the agent as the service sends them. An answer over
// the limit is cut off by aborting the connection: its status is already
// sent, and a clean end would pass a truncated body off as whole.
func (h *brokerHandler) stream(w http.ResponseWriter, a *edgeAnswer, scrubber *egress.Scrubber, max int64) {
	body := a.Body
	rc := http.NewResponseController(w)
	sw := scrubber.NewWriter(w)
	buf := make([]byte, edgeCopyBuffer)
	defer clear(buf)
	var total int64
	for {
		n, err := body.Read(buf)
		if n > 0 {
			total += int64(n)
			if total > max {
				panic(http.ErrAbortHandler)
			}
			a.metered(buf[:n])
			if _, werr := sw.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err != nil {
			if err != io.EOF {
				// The service or the deadline cut the answer short: end
				// the connection so the agent does not take it as whole.
				if !errors.Is(err, context.Canceled) {
					h.logger.Warn("broker: the service's answer broke off", "error", err, "after_bytes", total)
				}
				panic(http.ErrAbortHandler)
			}
			break
		}
	}
	// The usage is told before the scrubber's held-back tail (the
	// stream's last bytes) is sent.
	a.settleUsage()
	_ = sw.Close()
	_ = rc.Flush()
}

// upstream is the pooled client for the operator's private targets, which
// the engine reports with each injection so that the edge's guard is the
// engine's.
func (h *brokerHandler) upstream(privateTargets string) *http.Client {
	h.clientsMu.Lock()
	defer h.clientsMu.Unlock()
	if c, ok := h.clients[privateTargets]; ok {
		return c
	}
	guard, err := egress.ParseGuard(privateTargets)
	if err != nil {
		guard = &egress.Guard{}
	}
	c := guard.Client(egress.ClientOptions{MaxIdleConnsPerHost: 256, RootCAs: h.roots})
	if len(h.clients) > 16 {
		clear(h.clients)
	}
	h.clients[privateTargets] = c
	return c
}

// splitBrokerPath takes /broker/<org>/<cred>/<rest> apart; rest keeps its
// percent-encoding and starts with '/'.
func splitBrokerPath(escaped string) (org, cred, rest string, ok bool) {
	p, found := strings.CutPrefix(escaped, "/broker/")
	if !found {
		return "", "", "", false
	}
	parts := strings.SplitN(p, "/", 3)
	if len(parts) < 2 {
		return "", "", "", false
	}
	org, cred, rest = parts[0], parts[1], "/"
	if len(parts) == 3 {
		rest = "/" + parts[2]
	}
	if !contract.ValidOrgName(org) || !contract.ValidCredName(cred) {
		return "", "", "", false
	}
	return org, cred, rest, true
}

// brokerToken finds the caller's Vault token and the header it came in.
func brokerToken(h http.Header) (token, header string) {
	if auth := h.Get("Authorization"); auth != "" {
		scheme, value, _ := strings.Cut(auth, " ")
		value = strings.TrimSpace(value)
		if strings.EqualFold(scheme, "Basic") {
			// SDKs that use basic auth send their key as the user name
			// (or, some, as the password).
			if raw, err := base64.StdEncoding.DecodeString(value); err == nil {
				user, pass, _ := strings.Cut(string(raw), ":")
				if user != "" {
					return user, "Authorization"
				}
				return pass, "Authorization"
			}
			return "", "Authorization"
		}
		// Bearer, and the schemes some services use (token, Bot).
		return value, "Authorization"
	}
	for _, name := range brokerTokenHeaders {
		if v := h.Get(name); v != "" {
			return v, name
		}
	}
	return "", ""
}

func unauthorized(msg string) *egress.Error {
	return &egress.Error{Status: http.StatusUnauthorized, Msg: msg}
}

func asEgressError(err error) *egress.Error {
	var e *egress.Error
	if errors.As(err, &e) {
		return e
	}
	return &egress.Error{Status: http.StatusBadGateway, Msg: "the broker failed"}
}

// brokerFail answers in an error shape the common SDKs read: OpenAI's and
// Stripe's ({"error": {"message"}}) and Anthropic's (with "type": "error"
// beside it), so an SDK shows the message. X-Broker-Error tells it from the
// service's own errors; x-should-retry: false stops SDKs from retrying what
// cannot succeed, and 401s say how to authenticate.
func brokerFail(w http.ResponseWriter, e *egress.Error) int {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Broker-Error", "true")
	switch {
	case e.Status == http.StatusUnauthorized:
		if h.Get("WWW-Authenticate") == "" { // MCP sets its own challenge
			h.Set("WWW-Authenticate", `Bearer realm="credentials broker", error="invalid_token"`)
		}
		h.Set("X-Should-Retry", "false")
	case e.Permanent:
		h.Set("X-Should-Retry", "false")
	case e.RetryAfter > 0:
		h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	case e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests:
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type":  "error",
		"error": map[string]any{"type": brokerErrorType(e.Status), "message": e.Msg},
	})
	return e.Status
}

// brokerErrorType names the error as the SDKs' own error types do.
func brokerErrorType(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusBadRequest, http.StatusMethodNotAllowed:
		return "invalid_request_error"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	}
	return "broker_error"
}

// brokerLogPath is the path for logs: org and credential, not the rest,
// which may carry customer data.
func brokerLogPath(r *http.Request) string {
	org, cred, _, ok := splitBrokerPath(r.URL.EscapedPath())
	if !ok {
		return "/broker/?"
	}
	return "/broker/" + org + "/" + cred + "/…"
}

// tokenKey names a token in the edge's cache without keeping the token.
func tokenKey(token, org, cred string) string {
	sum := sha256.Sum256([]byte(token + "\x00" + org + "\x00" + cred))
	return hex.EncodeToString(sum[:16])
}
