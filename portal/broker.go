package portal

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
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

	// clientsMu guards clients: one pooled client per set of private
	// targets the engine reports (in practice, one).
	clientsMu sync.Mutex
	clients   map[string]*http.Client
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
	return &brokerHandler{
		vaultAddr: strings.TrimSuffix(vaultAddr, "/"),
		vault:     &http.Client{Transport: t, Timeout: edgeVaultTimeout},
		key:       key,
		publicURL: publicURL,
		logger:    logger,
		sealed:    newSealedCache(),
		clients:   map[string]*http.Client{},
	}
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
}

func (c *edgeCall) mount() string { return contract.Mount(c.org) + "/" }

// serve handles one call and returns the status sent, for the log.
func (h *brokerHandler) serve(w http.ResponseWriter, r *http.Request) int {
	call, fail := h.parse(r)
	if fail != nil {
		return brokerFail(w, fail)
	}
	if h.isMailCall(r.Context(), call, r.Method) {
		return h.sendMail(w, r, call)
	}
	inj, fail := h.authorize(r.Context(), call, r.Method)
	if fail != nil {
		return brokerFail(w, fail)
	}
	defer inj.Material.Zero()
	return h.forward(w, r, call, inj)
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
	if r.Header.Get("Upgrade") != "" {
		return nil, &egress.Error{Status: http.StatusNotImplemented, Permanent: true,
			Msg: "protocol upgrades (WebSocket) are not brokered: use the service's HTTP API"}
	}
	token, from := brokerToken(r.Header)
	if token == "" {
		return nil, unauthorized("send your Vault token as Authorization: Bearer <token>, X-Vault-Token, or the header your service's SDK puts its key in")
	}
	decoded, err := egress.CleanPath(rest)
	if err != nil {
		return nil, asEgressError(err)
	}
	if h.key == nil {
		return nil, &egress.Error{Status: http.StatusServiceUnavailable, Permanent: true,
			Msg: "this portal has no edge key: the operator sets " + egress.EdgeKeyEnv + " (portal edge-key prints a pair)"}
	}
	return &edgeCall{org: org, cred: cred, rest: rest, decoded: decoded, token: token, tokenHeader: from}, nil
}

// forward makes the call to the service and streams the answer back.
func (h *brokerHandler) forward(w http.ResponseWriter, r *http.Request, call *edgeCall, inj *egress.EdgeInjection) int {
	target := call.rest
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	u, err := egress.ResolveTarget(inj.Service, target)
	if err != nil {
		return brokerFail(w, asEgressError(err))
	}
	if r.ContentLength > inj.MaxBody {
		return brokerFail(w, egress.TooLarge("request", inj.MaxBody))
	}
	header, err := egress.OutboundHeaders(r.Header, inj.Injection, call.token)
	if err != nil {
		return brokerFail(w, asEgressError(err))
	}
	timeout := time.Duration(inj.TimeoutSeconds) * time.Second
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	// The server's own read deadline is for pages; a brokered upload may
	// take as long as broker_timeout allows. Full duplex: the transport may
	// still be reading the request body (if only to see its end) when the
	// answer starts, and HTTP/1 would otherwise close the body once the
	// answer's headers are out, failing the upload and the answer with it.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(timeout))
	_ = rc.EnableFullDuplex()

	body := &limitedBody{r: r.Body, left: inj.MaxBody}
	var reqBody io.Reader = body
	if r.ContentLength == 0 && r.Body == http.NoBody {
		reqBody = nil
	}
	out, err := http.NewRequestWithContext(ctx, r.Method, u.String(), reqBody)
	if err != nil {
		return brokerFail(w, egress.BadRequest("cannot build the request"))
	}
	out.ContentLength = r.ContentLength
	out.Header = header
	out.Header.Set("Accept-Encoding", egress.AcceptEncoding)
	if err := egress.Inject(out, inj.Injection, inj.Material); err != nil {
		return brokerFail(w, asEgressError(err))
	}
	scrubber := egress.ScrubberFor(inj.Injection, inj.Material)
	defer scrubber.Zero()

	resp, err := h.upstream(inj.PrivateTargets).Do(out)
	if err != nil {
		if body.over {
			return brokerFail(w, egress.TooLarge("request", inj.MaxBody))
		}
		return brokerFail(w, egress.SendError(ctx, u, timeout, err))
	}
	defer resp.Body.Close()
	if resp.ContentLength > inj.MaxBody {
		return brokerFail(w, egress.TooLarge("answer", inj.MaxBody))
	}
	decoded, err := egress.DecodeBody(resp)
	if err != nil {
		return brokerFail(w, asEgressError(err))
	}

	base := strings.TrimSuffix(h.publicURL(), "/") + "/broker/" + call.org + "/" + call.cred
	answer := egress.AnswerHeaders(resp.Header, scrubber)
	if loc := answer.Get("Location"); loc != "" {
		answer.Set("Location", egress.RewriteLocation(inj.Service, u, loc, base))
	}
	if links := answer.Values("Link"); len(links) > 0 {
		answer.Del("Link")
		for _, l := range links {
			if l = egress.RewriteLink(inj.Service, u, l, base); l != "" {
				answer.Add("Link", l)
			}
		}
	}
	for k, vs := range answer {
		w.Header()[k] = vs
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(resp.StatusCode)
		return resp.StatusCode
	}
	if resp.ContentLength >= 0 && resp.ContentLength <= smallAnswer && len(resp.Header.Values("Content-Encoding")) == 0 {
		h.writeWhole(w, resp, decoded, scrubber)
		return resp.StatusCode
	}
	w.WriteHeader(resp.StatusCode)
	h.stream(w, decoded, scrubber, inj.MaxBody)
	return resp.StatusCode
}

// smallAnswer is the largest answer of known length that is read whole
// and sent with its length in one write, rather than streamed in chunks.
const smallAnswer = 64 << 10

// writeWhole sends a small answer of known length in one piece, with its
// (scrubbed) length, which SDKs and proxies on the way like to see.
func (h *brokerHandler) writeWhole(w http.ResponseWriter, resp *http.Response, body io.Reader, scrubber *egress.Scrubber) {
	buf := make([]byte, resp.ContentLength)
	if _, err := io.ReadFull(body, buf); err != nil {
		clear(buf)
		// Cut short by the service: end the connection rather than pass
		// a truncated body off as whole.
		panic(http.ErrAbortHandler)
	}
	out, changed := scrubber.Bytes(buf)
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(resp.StatusCode)
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
func (h *brokerHandler) stream(w http.ResponseWriter, body io.Reader, scrubber *egress.Scrubber, max int64) {
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
	c := guard.Client(egress.ClientOptions{MaxIdleConnsPerHost: 256})
	if len(h.clients) > 16 {
		clear(h.clients)
	}
	h.clients[privateTargets] = c
	return c
}

// limitedBody passes a request body on up to a limit, then fails the read
// (and the call) instead of sending a truncated body.
type limitedBody struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.r == nil {
		return 0, io.EOF
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.over = true
		return 0, errors.New("request body over broker_max_body")
	}
	return n, err
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
		h.Set("WWW-Authenticate", `Bearer realm="credentials broker", error="invalid_token"`)
		h.Set("X-Should-Retry", "false")
	case e.Permanent:
		h.Set("X-Should-Retry", "false")
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
