package portal

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
)

// The forward proxy: programs that cannot be pointed at a base URL (gh,
// git, curl, cloud CLIs) run with HTTPS_PROXY=http://<org>:<agent-token>@
// <portal>:<proxy port> and the org's proxy CA trusted. CONNECT tunnels
// are intercepted with a leaf certificate of the org's CA, plain http://
// requests are taken as they come; either way each request is one call of
// the edge's pipeline (the same as /broker/): the credential is the one of
// the agent's whose base URL the request falls under, Vault authorizes the
// call with the agent's token on the call's own path, the credential is
// injected, the dial guard, the header policy and the scrubber apply, and
// last use is recorded. Hosts none of the agent's credentials serve are
// refused: the proxy is not a way out to anywhere else.

// ProxyCredentialHeader names the credential to use where several of the
// agent's serve the same URL; the proxy removes it.
const ProxyCredentialHeader = "X-Broker-Credential"

// forwardProxy serves the proxy listener.
type forwardProxy struct {
	edge   *brokerHandler
	mcp    *mcpServer
	cas    *proxyCAs
	logger *slog.Logger
	// guard dials the hosts passed through untouched: the operator's
	// private targets for the portal's own calls, else public addresses.
	guard *egress.Guard

	// inner serves the requests inside intercepted tunnels, HTTP/1.1 or
	// HTTP/2 as the client's ALPN chose; tunnels feeds it their
	// connections, each with its org, token and host.
	inner   *http.Server
	conns   *connQueue
	tunnels sync.Map // *tls.Conn → *tunnel

	orgsMu sync.Mutex
	orgs   map[string]tokenOrg
}

type tunnel struct{ org, token, host string }

type tunnelKey struct{}

type tokenOrg struct {
	org   string
	until time.Time
}

func newForwardProxy(edge *brokerHandler, m *mcpServer, cas *proxyCAs, guard *egress.Guard, logger *slog.Logger) *forwardProxy {
	p := &forwardProxy{edge: edge, mcp: m, cas: cas, guard: guard, logger: logger, conns: newConnQueue(), orgs: map[string]tokenOrg{}}
	p.inner = &http.Server{
		Handler:           http.HandlerFunc(p.serveTunneled),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    egress.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if t, ok := p.tunnels.Load(c); ok {
				ctx = context.WithValue(ctx, tunnelKey{}, t)
			}
			return ctx
		},
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateClosed || s == http.StateHijacked {
				p.tunnels.Delete(c)
			}
		},
	}
	go func() { _ = p.inner.Serve(p.conns) }()
	return p
}

func (p *forwardProxy) shutdown(ctx context.Context) error {
	return p.inner.Shutdown(ctx)
}

// ServeHTTP takes a CONNECT or a plain http:// request.
func (p *forwardProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	org, token, fail := p.credentials(r)
	if fail != nil {
		if fail.Status == http.StatusProxyAuthRequired {
			w.Header().Set("Proxy-Authenticate", `Basic realm="credentials broker"`)
		}
		p.logCall(r.Method, org, "", r.Host, brokerFail(w, fail), time.Now())
		return
	}
	if r.Method == http.MethodConnect {
		p.connect(w, r, org, token)
		return
	}
	if !r.URL.IsAbs() || r.URL.Scheme != "http" {
		brokerFail(w, egress.BadRequest("send absolute http:// URLs to this proxy, or CONNECT for https"))
		return
	}
	r.Header.Del("Proxy-Authorization")
	r.Header.Del("Proxy-Connection")
	p.forward(w, r, org, token, r.URL)
}

// credentials reads the org and the agent's token from
// Proxy-Authorization: user <org> and password <token>, or the token alone
// as the user name, whose org Vault names.
func (p *forwardProxy) credentials(r *http.Request) (org, token string, _ *egress.Error) {
	need := &egress.Error{Status: http.StatusProxyAuthRequired, Permanent: true,
		Msg: "the proxy needs your org and Vault token: HTTPS_PROXY=http://<org>:<token>@host:port (or the token alone as the user)"}
	scheme, value, ok := strings.Cut(r.Header.Get("Proxy-Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", "", need
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
	if err != nil {
		return "", "", need
	}
	user, pass, _ := strings.Cut(string(raw), ":")
	user, _ = url.PathUnescape(user)
	pass, _ = url.PathUnescape(pass)
	switch {
	case user != "" && pass != "":
		if !contract.ValidOrgName(user) {
			return "", "", egress.BadRequest("the proxy's user name is the org, and %q is not one", user)
		}
		return user, pass, nil
	case user != "":
		org, fail := p.orgOf(r.Context(), user)
		return org, user, fail
	}
	return "", "", need
}

// orgOf names the org of an agent's token from its policy
// (orgs-<org>-agent-<name>), asked of Vault once and kept until the token
// would expire (at most proxyOrgReuse): which org is all it says, every
// call is still authorized by Vault.
func (p *forwardProxy) orgOf(ctx context.Context, token string) (string, *egress.Error) {
	key := tokenKey(token, "", "\x00proxy")
	p.orgsMu.Lock()
	if o, ok := p.orgs[key]; ok && time.Now().Before(o.until) {
		p.orgsMu.Unlock()
		return o.org, nil
	}
	p.orgsMu.Unlock()
	var self struct {
		Data struct {
			Policies   []string `json:"policies"`
			ExpireTime string   `json:"expire_time"`
		} `json:"data"`
	}
	ctx, cancel := context.WithTimeout(ctx, edgeVaultTimeout)
	defer cancel()
	if fail := p.edge.vaultDo(ctx, token, http.MethodGet, &url.URL{Path: "/v1/auth/token/lookup-self"}, nil, &self, mcpRefusal); fail != nil {
		if fail.Status == http.StatusUnauthorized {
			fail.Status = http.StatusProxyAuthRequired
		}
		return "", fail
	}
	org := ""
	for _, pol := range self.Data.Policies {
		if rest, ok := strings.CutPrefix(pol, "orgs-"); ok {
			if o, _, ok := strings.Cut(rest, "-agent-"); ok && contract.ValidOrgName(o) {
				org = o
				break
			}
		}
	}
	if org == "" {
		return "", &egress.Error{Status: http.StatusForbidden, Permanent: true,
			Msg: "this token is no agent's: name the org as the proxy's user name (http://<org>:<token>@host:port)"}
	}
	until := time.Now().Add(proxyOrgReuse)
	if exp, err := time.Parse(time.RFC3339Nano, self.Data.ExpireTime); err == nil && exp.Before(until) {
		until = exp
	}
	p.orgsMu.Lock()
	if len(p.orgs) > maxSealedEntries {
		clear(p.orgs)
	}
	p.orgs[key] = tokenOrg{org: org, until: until}
	p.orgsMu.Unlock()
	return org, nil
}

const proxyOrgReuse = 5 * time.Minute

// connect answers a CONNECT to a host one of the agent's credentials
// serves and intercepts the tunnel with the org's CA.
func (p *forwardProxy) connect(w http.ResponseWriter, r *http.Request, org, token string) {
	start := time.Now()
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || host == "" || port == "" {
		p.logCall(r.Method, org, "", r.Host, brokerFail(w, egress.BadRequest("CONNECT needs host:port")), start)
		return
	}
	if _, err := p.cas.ca(org); err != nil {
		p.logCall(r.Method, org, "", r.Host, brokerFail(w, &egress.Error{Status: http.StatusServiceUnavailable, Permanent: true,
			Msg: "the proxy has no CA for org " + org + ": the operator makes one with portal proxy-ca"}), start)
		return
	}
	target := &url.URL{Scheme: "https", Host: r.Host, Path: "/"}
	creds, fail := p.credsOn(r.Context(), org, token, target)
	if fail == nil && len(creds) == 0 {
		if p.tunnelsOtherHosts(r.Context(), org, token) {
			p.logCall(r.Method, org, "", r.Host, p.passThrough(w, r.Host), start)
			return
		}
		fail = noneServes(target)
	}
	if fail != nil {
		p.logCall(r.Method, org, "", r.Host, brokerFail(w, fail), start)
		return
	}
	conn, buf, fail := takeOver(w)
	if fail != nil {
		p.logCall(r.Method, org, "", r.Host, fail.Status, start)
		return
	}
	if _, err := conn.Write([]byte(connectionEstablished)); err != nil {
		conn.Close()
		return
	}
	tc := tls.Server(&bufferedConn{Conn: conn, r: buf.Reader}, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			// The tunnel's host, whatever the hello names: the
			// requests inside go there and nowhere else.
			return p.cas.leaf(org, host)
		},
	})
	p.tunnels.Store(tc, &tunnel{org: org, token: token, host: r.Host})
	p.logCall(r.Method, org, "", r.Host, http.StatusOK, start)
	if !p.conns.push(tc) {
		p.tunnels.Delete(tc)
		tc.Close()
	}
}

// serveTunneled serves one request inside an intercepted tunnel.
func (p *forwardProxy) serveTunneled(w http.ResponseWriter, r *http.Request) {
	t, _ := r.Context().Value(tunnelKey{}).(*tunnel)
	if t == nil {
		brokerFail(w, &egress.Error{Status: http.StatusInternalServerError, Msg: "the proxy lost this tunnel"})
		return
	}
	if !sameAuthority(r.Host, t.host) {
		brokerFail(w, egress.BadRequest("this tunnel is to %s: requests in it go there", t.host))
		return
	}
	p.forward(w, r, t.org, t.token, &url.URL{Scheme: "https", Host: t.host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery})
}

// sameAuthority compares a request's Host with the tunnel's host:port,
// where the default port may be left out.
func sameAuthority(reqHost, tunnelHost string) bool {
	if strings.EqualFold(reqHost, tunnelHost) {
		return true
	}
	h, port, err := net.SplitHostPort(tunnelHost)
	return err == nil && port == "443" && strings.EqualFold(reqHost, h)
}

// forward is one call of the edge's pipeline for target.
func (p *forwardProxy) forward(w http.ResponseWriter, r *http.Request, org, token string, target *url.URL) {
	start := time.Now()
	websocket, fail := isWebSocketCall(r)
	if fail != nil {
		p.logCall(r.Method, org, "", target.Host, brokerFail(w, fail), start)
		return
	}
	if !contract.ValidMethod(r.Method) {
		p.logCall(r.Method, org, "", target.Host, brokerFail(w, &egress.Error{Status: http.StatusMethodNotAllowed, Permanent: true, Msg: contract.MethodRule()}), start)
		return
	}
	named := r.Header.Get(ProxyCredentialHeader)
	if named == "" {
		named = placeholderCred(r.Header)
	}
	cred, rest, fail := p.pick(r.Context(), org, token, target, named)
	if fail != nil {
		p.logCall(r.Method, org, "", target.Host, brokerFail(w, fail), start)
		return
	}
	call, fail := p.edge.newCall(org, cred, rest, token, "Proxy-Authorization")
	if fail != nil {
		p.logCall(r.Method, org, cred, target.Host, brokerFail(w, fail), start)
		return
	}
	grant, fail := p.edge.authorize(r.Context(), call, r.Method)
	if fail != nil {
		p.logCall(r.Method, org, cred, target.Host, brokerFail(w, fail), start)
		return
	}
	defer grant.Material.Zero()
	cw := &countingWriter{ResponseWriter: w}
	status := 0
	defer func() {
		p.edge.trail.note(call, grant, trailLine{At: start.UTC(), Ingress: "proxy", Method: r.Method, Path: target.Path,
			Status: status, Bytes: cw.n, DurationMS: msSince(start)})
	}()
	w = cw
	body, held := p.edge.approvalGate(w, r, call, grant)
	if held != 0 {
		status = held
		p.logCall(r.Method, org, cred, target.Host, status, start)
		return
	}
	contentLength := r.ContentLength
	if br, ok := body.(*bytes.Reader); ok {
		contentLength = int64(br.Len())
	}
	if websocket {
		status = p.edge.webSocket(w, r, grant, call, target.RawQuery)
		p.logCall(r.Method, org, cred, target.Host, status, start)
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(grant.Timeout()))
	_ = rc.EnableFullDuplex()
	header := r.Header.Clone()
	header.Del(ProxyCredentialHeader)
	answer, fail := p.edge.send(r.Context(), grant, edgeRequest{
		call: call, method: r.Method, rawQuery: target.RawQuery,
		header: header, body: body, contentLength: contentLength, proxied: true,
	})
	if fail != nil {
		status = brokerFail(w, fail)
		p.logCall(r.Method, org, cred, target.Host, status, start)
		return
	}
	defer answer.Close()
	status = p.edge.respond(w, r.Method, answer)
	p.logCall(r.Method, org, cred, target.Host, status, start)
}

// connectionEstablished answers a CONNECT the proxy takes.
const connectionEstablished = "HTTP/1.1 200 Connection established\r\n\r\n"

// tunnelsOtherHosts says whether the org passes hosts outside the agent's
// credentials through (config proxy_other_hosts=tunnel), as the agent's
// token reads it; any failure to read it refuses.
func (p *forwardProxy) tunnelsOtherHosts(ctx context.Context, org, token string) bool {
	var out struct {
		Data struct {
			ProxyOtherHosts string `json:"proxy_other_hosts"`
		} `json:"data"`
	}
	ctx, cancel := context.WithTimeout(ctx, edgeVaultTimeout)
	defer cancel()
	u := &url.URL{Path: "/v1/" + contract.Mount(org) + "/agent-settings"}
	if fail := p.edge.vaultDo(ctx, token, http.MethodGet, u, nil, &out, mcpRefusal); fail != nil {
		return false
	}
	return out.Data.ProxyOtherHosts == "tunnel"
}

// passThrough tunnels the CONNECT to host untouched: no credential, no
// interception; the dial guard still decides which addresses it may reach.
func (p *forwardProxy) passThrough(w http.ResponseWriter, host string) int {
	ctx, cancel := context.WithTimeout(context.Background(), egress.DialTimeout)
	service, err := p.guard.DialContext(ctx, "tcp", host)
	cancel()
	if err != nil {
		msg := "the proxy cannot reach " + host
		if errors.Is(err, egress.ErrPrivateTarget) {
			msg = host + " is not a public address, nor one the operator allows"
		}
		return brokerFail(w, &egress.Error{Status: http.StatusBadGateway, Msg: msg})
	}
	defer service.Close()
	conn, buf, fail := takeOver(w)
	if fail != nil {
		return fail.Status
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(connectionEstablished)); err != nil {
		return http.StatusOK
	}
	_ = relay(conn, buf.Reader, service, func(dst io.Writer, src io.Reader) error {
		_, err := io.Copy(dst, src)
		return err
	})
	return http.StatusOK
}

func (p *forwardProxy) logCall(method, org, cred, host string, status int, start time.Time) {
	p.logger.Info("broker", "via", "proxy", "method", method, "org", org, "cred", cred, "host", host,
		"status", status, "duration_ms", time.Since(start).Milliseconds())
}

// A placeholder is what a program is given instead of a secret, for the
// tools that will not run without one (GH_TOKEN=ghp_broker-cred-gh-work):
// broker-cred-<credential>, after any prefix the tool expects. Where the
// program sends it as its credential (Authorization, basic auth, the
// headers SDKs put keys in) it names the credential; the injection then
// replaces it there, since the caller's own credential headers are never
// passed on. Anywhere else (a body, a query) it is passed on as it is:
// nothing outside the injection's place is rewritten.
var placeholderPattern = regexp.MustCompile(`broker-cred-([a-z0-9][a-z0-9_-]{0,63})`)

// placeholderCred is the credential a placeholder in h's credential
// headers names, "" when there is none.
func placeholderCred(h http.Header) string {
	values := []string{}
	if auth := h.Get("Authorization"); auth != "" {
		scheme, value, _ := strings.Cut(auth, " ")
		if strings.EqualFold(scheme, "Basic") {
			if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value)); err == nil {
				value = string(raw)
			}
		}
		values = append(values, value)
	}
	for _, name := range brokerTokenHeaders {
		values = append(values, h.Get(name))
	}
	for _, v := range values {
		if m := placeholderPattern.FindStringSubmatch(v); m != nil && contract.ValidCredName(m[1]) {
			return m[1]
		}
	}
	return ""
}

// proxyCred is one of the agent's credentials the proxy may use: its
// name and the base URL requests fall under.
type proxyCred struct {
	name string
	base *url.URL
}

// credsOn lists the agent's credentials whose base URL target falls under,
// longest base path first.
func (p *forwardProxy) credsOn(ctx context.Context, org, token string, target *url.URL) ([]proxyCred, *egress.Error) {
	list, fail := p.mcp.toolsFor(ctx, org, token)
	if fail != nil {
		if fail.Status == http.StatusUnauthorized {
			fail.Status = http.StatusProxyAuthRequired
		}
		return nil, fail
	}
	return credsServing(list.creds, target), nil
}

// credsServing are those of creds the agent may call over HTTP whose base
// URL is on target's scheme, host and port.
func credsServing(creds []*agentCred, target *url.URL) []proxyCred {
	var out []proxyCred
	for _, c := range creds {
		if !c.HTTP || c.BaseURL == "" || c.Unusable != "" {
			continue
		}
		b, err := url.Parse(c.BaseURL)
		if err != nil || !strings.EqualFold(b.Scheme, target.Scheme) || !strings.EqualFold(b.Hostname(), target.Hostname()) ||
			egress.EffectivePort(b) != egress.EffectivePort(target) {
			continue
		}
		out = append(out, proxyCred{name: c.Name, base: b})
	}
	return out
}

// noneServes refuses a target none of the agent's credentials serve.
func noneServes(target *url.URL) *egress.Error {
	return &egress.Error{Status: http.StatusForbidden, Permanent: true, Msg: fmt.Sprintf(
		"none of this token's credentials serves %s://%s: the proxy only reaches the services of your credentials", target.Scheme, target.Host)}
}

// pick chooses the credential for target: the one named in
// X-Broker-Credential, else the one whose base path target falls under
// (the longest); rest is target's path below that base.
func (p *forwardProxy) pick(ctx context.Context, org, token string, target *url.URL, named string) (string, string, *egress.Error) {
	creds, fail := p.credsOn(ctx, org, token, target)
	if fail != nil {
		return "", "", fail
	}
	return choose(creds, target, named)
}

// choose is pick's decision among the credentials on target's host.
func choose(creds []proxyCred, target *url.URL, named string) (string, string, *egress.Error) {
	if len(creds) == 0 {
		return "", "", noneServes(target)
	}
	path := target.EscapedPath()
	if path == "" {
		path = "/"
	}
	var best []proxyCred
	bestLen := -1
	for _, c := range creds {
		bp := strings.TrimSuffix(c.base.EscapedPath(), "/")
		if bp != "" && path != bp && !strings.HasPrefix(path, bp+"/") {
			continue
		}
		if named != "" && c.name != named {
			continue
		}
		switch {
		case len(bp) > bestLen:
			best, bestLen = []proxyCred{c}, len(bp)
		case len(bp) == bestLen:
			best = append(best, c)
		}
	}
	switch {
	case len(best) == 0 && named != "":
		return "", "", &egress.Error{Status: http.StatusForbidden, Permanent: true, Msg: fmt.Sprintf("credential %s is not this token's, or does not serve %s://%s%s", named, target.Scheme, target.Host, path)}
	case len(best) == 0:
		return "", "", &egress.Error{Status: http.StatusForbidden, Permanent: true, Msg: fmt.Sprintf("%s://%s%s is not under the base URL of any of this token's credentials", target.Scheme, target.Host, path)}
	case len(best) > 1:
		names := make([]string, len(best))
		for i, c := range best {
			names[i] = c.name
		}
		return "", "", &egress.Error{Status: http.StatusConflict, Permanent: true, Msg: fmt.Sprintf(
			"credentials %s all serve %s://%s%s: name one in the %s header", strings.Join(names, ", "), target.Scheme, target.Host, path, ProxyCredentialHeader)}
	}
	rest := strings.TrimPrefix(path, strings.TrimSuffix(best[0].base.EscapedPath(), "/"))
	if rest == "" {
		rest = "/"
	}
	return best[0].name, rest, nil
}

// bufferedConn reads first what the CONNECT's reader already holds (a
// client may send its TLS hello without waiting for the 200).
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// connQueue is a listener whose connections are the intercepted tunnels.
type connQueue struct {
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.closed.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return proxyAddr{} }

type proxyAddr struct{}

func (proxyAddr) Network() string { return "proxy" }
func (proxyAddr) String() string  { return "intercepted tunnels" }
