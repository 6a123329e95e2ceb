package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/harness"
)

// tlsService is an HTTPS service, HTTP/2 only (httptest's EnableHTTP2
// offers h2 alone), that takes key as
// a bearer token and, to try the scrubber, says back the Authorization it
// got.
type tlsService struct {
	*httptest.Server
	authorized, refused atomic.Int64
}

func startTLSService(t *testing.T, key string) *tlsService {
	t.Helper()
	s := &tlsService{}
	s.Server = serveTLS(t, true, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok := r.Header.Get("Authorization") == "Bearer "+key
		if !ok {
			s.refused.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		s.authorized.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"proto": r.Proto, "method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery,
			"body": string(body), "you_sent": r.Header.Get("Authorization"),
			"proxy_auth": r.Header.Get("Proxy-Authorization"),
		})
	}))
	return s
}

// serveTLS serves h over TLS with a certificate of the test CA, HTTP/2
// only (httptest's EnableHTTP2 offers h2 alone) or HTTP/1.1 only, until
// the test ends.
func serveTLS(t *testing.T, http2 bool, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	cfg, err := vault.CA.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = cfg
	srv.EnableHTTP2 = http2
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// proxyClient is a program configured with HTTPS_PROXY and the org's CA.
func proxyClient(t *testing.T, proxyURL string, user *url.Userinfo, caPath string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("the proxy CA is not PEM")
	}
	pu, err := url.Parse(proxyURL)
	if err != nil {
		t.Fatal(err)
	}
	pu.User = user
	return &http.Client{Transport: &http.Transport{
		Proxy:             http.ProxyURL(pu),
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
	}}
}

type echoed struct {
	Proto, Method, Path, Query, Body string
	YouSent                          string `json:"you_sent"`
	ProxyAuth                        string `json:"proxy_auth"`
}

func proxiedCall(t *testing.T, c *http.Client, method, u, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error(), ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Proto
}

// Long on purpose: one story told in order, whose steps depend on the ones before.
func TestProxyModeCallsThroughTheEdge(t *testing.T) {
	org := newOrg(t, "proxy-mode")
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	const key = "sk-proxy-canary-5f1e0c9b7a3d4e2f"
	svc := startTLSService(t, key)
	write(t, admin, mount+"/services/tls-api", map[string]interface{}{"types": "api_key", "base_urls": svc.URL + "/v1"})
	write(t, admin, mount+"/creds/tls-key", map[string]interface{}{"type": "api_key", "service": "tls-api", "api_key": key})
	plain := startFake(t)
	write(t, admin, mount+"/services/local", map[string]interface{}{"types": "api_key", "base_urls": plain.URL})
	write(t, admin, mount+"/creds/key-a", map[string]interface{}{"type": "api_key", "service": "local", "api_key": brokerKeyA})

	caDir := t.TempDir()
	caPath, err := portal.CreateProxyCA(caDir, org, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := portal.CreateProxyCA(caDir, org, false); err == nil {
		t.Fatal("a second proxy-ca replaced the CA agents trust without -replace")
	}
	logs := &syncBuffer{}
	srv := servePortal(t, portal.Config{ProxyAddr: "127.0.0.1:0", ProxyCADir: caDir, OutboundRoots: vault.CA.Pool(),
		PrivateTargets: harness.TestPrivateTargets, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	token := newAgent(t, org, provision.AgentSpec{Name: "cli", Creds: []string{"tls-key", "key-a"}})
	other := newAgent(t, org, provision.AgentSpec{Name: "bystander", Creds: []string{"key-a"}})
	plain.SetForbidden(token)

	c := proxyClient(t, srv.ProxyURL(), url.UserPassword(org, token), caPath)
	var outputs []string

	// Through an intercepted tunnel, over HTTP/2: the service gets the
	// key, the program an answer with the key scrubbed out and nothing of
	// the proxy's authorization.
	status, body, proto := proxiedCall(t, c, http.MethodPost, svc.URL+"/v1/items?limit=2", `{"name":"x"}`)
	outputs = append(outputs, body)
	var got echoed
	if status != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil {
		t.Fatalf("POST through the proxy: %d %s", status, body)
	}
	if proto != "HTTP/2.0" || got.Proto != "HTTP/2.0" {
		t.Errorf("the program spoke %s to the proxy and the proxy %s to the service, want HTTP/2.0 both", proto, got.Proto)
	}
	if got.Method != http.MethodPost || got.Path != "/v1/items" || got.Query != "limit=2" || got.Body != `{"name":"x"}` || got.ProxyAuth != "" {
		t.Errorf("the service got %+v", got)
	}
	if strings.Contains(got.YouSent, key) || !strings.Contains(got.YouSent, "Bearer") {
		t.Errorf("the key came back unscrubbed, or the service's answer was changed otherwise: %q", got.YouSent)
	}

	// A placeholder where the program sends its key names the credential
	// and is replaced by the key; the same string in the body, where the
	// injection does not go, reaches the service as it is.
	req, _ := http.NewRequest(http.MethodPost, svc.URL+"/v1/items", strings.NewReader(`{"note":"sk-broker-cred-tls-key"}`))
	req.Header.Set("Authorization", "Bearer sk-broker-cred-tls-key")
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	outputs = append(outputs, string(raw))
	got = echoed{}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &got) != nil || got.Body != `{"note":"sk-broker-cred-tls-key"}` {
		t.Errorf("with a placeholder: %d %s", resp.StatusCode, raw)
	}

	// The token alone as the user name: Vault names its org.
	status, body, _ = proxiedCall(t, proxyClient(t, srv.ProxyURL(), url.User(token), caPath), http.MethodGet, svc.URL+"/v1/items", "")
	outputs = append(outputs, body)
	if status != http.StatusOK {
		t.Errorf("with the token as the user: %d %s", status, body)
	}

	// curl, over HTTP/1.1, with the CA file.
	if curl, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command(curl, "-sS", "--http1.1", "--proxy", srv.ProxyURL(), "--proxy-user", org+":"+token,
			"--cacert", caPath, "-w", `\nspoke HTTP/%{http_version}`, svc.URL+"/v1/from-curl").CombinedOutput()
		outputs = append(outputs, string(out))
		if err != nil || !strings.Contains(string(out), `"path":"/v1/from-curl"`) || !strings.HasSuffix(string(out), "spoke HTTP/1.1") {
			t.Errorf("curl through the proxy: %v %s", err, out)
		}
	}

	// Node's fetch, with Node's own proxy support and the CA.
	node, _ := conformanceNode(t)
	proxyWithAuth, _ := url.Parse(srv.ProxyURL())
	proxyWithAuth.User = url.UserPassword(org, token)
	nodeCmd := exec.Command(node, "-e", `fetch(process.argv[1], {method: "PUT", body: "from node"}).then(async r => console.log(r.status, await r.text())).catch(e => { console.error(e.cause || e); process.exit(1) })`, svc.URL+"/v1/from-node")
	nodeCmd.Env = append(os.Environ(), "NODE_USE_ENV_PROXY=1", "HTTPS_PROXY="+proxyWithAuth.String(), "NODE_EXTRA_CA_CERTS="+caPath, "NODE_NO_WARNINGS=1")
	out, err := nodeCmd.CombinedOutput()
	outputs = append(outputs, string(out))
	if err != nil || !strings.HasPrefix(string(out), "200 ") || !strings.Contains(string(out), `"body":"from node"`) {
		t.Errorf("Node's fetch through the proxy: %v %s", err, out)
	}

	// Plain http:// through the proxy, without a tunnel.
	status, body, _ = proxiedCall(t, c, http.MethodGet, plain.URL+"/v1/balance", "")
	outputs = append(outputs, body)
	if status != http.StatusOK {
		t.Errorf("plain http through the proxy: %d %s", status, body)
	}

	// Refusals, each before any service call: a path outside the
	// credential's base URL, a host none of the agent's credentials
	// serves, an agent not given the credential, no authorization.
	before := svc.authorized.Load() + svc.refused.Load()
	if status, body, _ = proxiedCall(t, c, http.MethodGet, svc.URL+"/admin", ""); status != http.StatusForbidden || !strings.Contains(body, "not under the base URL") {
		t.Errorf("a path outside the base URL: %d %s", status, body)
	}
	elsewhere := startTLSService(t, key)
	if status, body, _ = proxiedCall(t, c, http.MethodGet, elsewhere.URL+"/v1/x", ""); status != 0 || !strings.Contains(body, "Forbidden") {
		t.Errorf("a host none of the credentials serves: %d %s", status, body)
	}
	if status, body, _ = proxiedCall(t, proxyClient(t, srv.ProxyURL(), url.UserPassword(org, other), caPath), http.MethodGet, svc.URL+"/v1/x", ""); status != 0 || !strings.Contains(body, "Forbidden") {
		t.Errorf("an agent not given the credential: %d %s", status, body)
	}
	if status, body, _ = proxiedCall(t, proxyClient(t, srv.ProxyURL(), nil, caPath), http.MethodGet, plain.URL+"/v1/balance", ""); status != http.StatusProxyAuthRequired {
		t.Errorf("no proxy authorization: %d %s", status, body)
	}
	if n := svc.authorized.Load() + svc.refused.Load() + elsewhere.authorized.Load() + elsewhere.refused.Load(); n != before {
		t.Errorf("refused calls reached a service (%d calls)", n-before)
	}

	// An org that lets other hosts through: the tunnel is the program's
	// own, with the service's certificate, and nothing is injected.
	write(t, admin, mount+"/config", map[string]interface{}{"proxy_other_hosts": "tunnel"})
	pu, _ := url.Parse(srv.ProxyURL())
	pu.User = url.UserPassword(org, token)
	untouched := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: vault.CA.Pool()}}}
	if status, body, _ = proxiedCall(t, untouched, http.MethodGet, elsewhere.URL+"/v1/x", ""); status != http.StatusUnauthorized || elsewhere.refused.Load() != 1 {
		t.Errorf("a host passed through: %d %s (the service refused %d calls), want the service's own 401", status, body, elsewhere.refused.Load())
	}
	write(t, admin, mount+"/config", map[string]interface{}{"proxy_other_hosts": "refuse"})

	// Vault decides every call: the token revoked, the next call in the
	// same open tunnel is refused.
	write(t, vault.Client(), "auth/token/revoke", map[string]interface{}{"token": token})
	status, body, _ = proxiedCall(t, c, http.MethodGet, svc.URL+"/v1/items", "")
	if status != http.StatusUnauthorized {
		t.Errorf("a revoked token's call in an open tunnel: %d %s", status, body)
	}

	for _, out := range append(outputs, logs.String()) {
		if strings.Contains(out, key) || strings.Contains(out, brokerKeyA) || strings.Contains(out, token) {
			t.Fatalf("a secret in what the program or the log saw: %s", out)
		}
	}
	if !strings.Contains(logs.String(), "via=proxy") {
		t.Errorf("the proxy's calls are not in the log")
	}
}

// TestProxyModeGitCloneAndPush: git, unmodified, clones and pushes over
// HTTPS through the proxy to a git server that takes HTTP basic auth; the
// password is the org's, injected by the edge, and git never has it.
func TestProxyModeGitCloneAndPush(t *testing.T) {
	git, err := exec.LookPath("git")
	backend := "/usr/lib/git-core/git-http-backend"
	if _, serr := os.Stat(backend); err != nil || serr != nil {
		t.Fatalf("git and %s are needed (Debian's git package)", backend)
	}
	org := newOrg(t, "proxy-git")
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	const user, password = "ci-bot", "git-canary-pw-8d7c6b5a4f3e"

	root := t.TempDir()
	run := func(dir string, env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command(git, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), append([]string{"GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + root,
			"GIT_AUTHOR_NAME=ci", "GIT_AUTHOR_EMAIL=ci@acme.example", "GIT_COMMITTER_NAME=ci", "GIT_COMMITTER_EMAIL=ci@acme.example"}, env...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run(root, nil, "init", "-q", "--bare", "-b", "main", "repo.git")
	run(root+"/repo.git", nil, "config", "http.receivepack", "true")
	seed := t.TempDir()
	run(seed, nil, "init", "-q", "-b", "main")
	if err := os.WriteFile(seed+"/README", []byte("first\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(seed, nil, "add", "README")
	run(seed, nil, "commit", "-q", "-m", "first")
	run(seed, nil, "push", "-q", root+"/repo.git", "main")

	gitServer := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	srv := serveTLS(t, false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		gitServer.ServeHTTP(w, r)
	}))

	write(t, admin, mount+"/services/git-host", map[string]interface{}{
		"types": "password", "base_urls": srv.URL,
		"injection": `{"password": {"style": "basic"}}`,
	})
	write(t, admin, mount+"/creds/git", map[string]interface{}{"type": "password", "service": "git-host", "username": user, "password": password})
	caDir := t.TempDir()
	caPath, err := portal.CreateProxyCA(caDir, org, false)
	if err != nil {
		t.Fatal(err)
	}
	portalSrv := servePortal(t, portal.Config{ProxyAddr: "127.0.0.1:0", ProxyCADir: caDir, OutboundRoots: vault.CA.Pool()})
	token := newAgent(t, org, provision.AgentSpec{Name: "builder", Creds: []string{"git"}})
	proxy, _ := url.Parse(portalSrv.ProxyURL())
	proxy.User = url.UserPassword(org, token)
	env := []string{"HTTPS_PROXY=" + proxy.String(), "GIT_SSL_CAINFO=" + caPath}

	work := t.TempDir()
	var outputs []string
	outputs = append(outputs, run(work, env, "clone", srv.URL+"/repo.git", "clone"))
	if b, err := os.ReadFile(work + "/clone/README"); err != nil || string(b) != "first\n" {
		t.Fatalf("the clone has README %q (%v)", b, err)
	}
	if err := os.WriteFile(work+"/clone/README", []byte("second\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(work+"/clone", nil, "commit", "-q", "-am", "second")
	outputs = append(outputs, run(work+"/clone", env, "push", "origin", "main"))
	if log := run(root+"/repo.git", nil, "log", "--format=%s", "main"); log != "second\nfirst\n" {
		t.Fatalf("the server's history after the push: %q", log)
	}
	config, _ := os.ReadFile(work + "/clone/.git/config")
	for _, out := range append(outputs, string(config)) {
		if strings.Contains(out, password) {
			t.Fatalf("git saw the password: %s", out)
		}
	}
}

// TestProxyModeWebSocket: a WebSocket through an intercepted tunnel. The
// upgrade is authorized and injected like any call; the service's frames
// reach the program scrubbed of the key, the program's reach the service
// as sent.
func TestProxyModeWebSocket(t *testing.T) {
	org := newOrg(t, "proxy-ws")
	const key = "sk-ws-canary-0a9b8c7d6e5f4a3b"
	svc := startWebSocketService(t, org, key)
	caDir := t.TempDir()
	caPath, err := portal.CreateProxyCA(caDir, org, false)
	if err != nil {
		t.Fatal(err)
	}
	srv := servePortal(t, portal.Config{ProxyAddr: "127.0.0.1:0", ProxyCADir: caDir, OutboundRoots: vault.CA.Pool()})
	token := newAgent(t, org, provision.AgentSpec{Name: "streamer", Creds: []string{"ws-key"}})
	c := proxyClient(t, srv.ProxyURL(), url.UserPassword(org, token), caPath)
	c.Transport.(*http.Transport).ForceAttemptHTTP2 = false
	svc.exchange(t, "wss"+strings.TrimPrefix(svc.URL, "https")+"/v1/stream", &websocket.DialOptions{HTTPClient: c})
}

// wsService is a WebSocket service taking key as a bearer token: it
// echoes each message, then says back the Authorization it got. Its
// credential is ws-key of org.
type wsService struct {
	*httptest.Server
	key      string
	upgraded atomic.Int64
}

func startWebSocketService(t *testing.T, org, key string) *wsService {
	t.Helper()
	s := &wsService{key: key}
	s.Server = serveTLS(t, false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+key {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		s.upgraded.Add(1)
		ctx := r.Context()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			if c.Write(ctx, typ, msg) != nil || c.Write(ctx, websocket.MessageText, []byte("you sent "+r.Header.Get("Authorization"))) != nil {
				return
			}
		}
	}))
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	write(t, admin, mount+"/services/ws-api", map[string]interface{}{"types": "api_key", "base_urls": s.URL})
	write(t, admin, mount+"/creds/ws-key", map[string]interface{}{"type": "api_key", "service": "ws-api", "api_key": key})
	return s
}

// exchange dials u with opts and checks a short and a long message: each
// echoed as sent, the service's message with the key scrubbed; then one
// upgrade has reached the service.
func (s *wsService) exchange(t *testing.T, u string, opts *websocket.DialOptions) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		t.Fatalf("WebSocket to %s: %v", u, err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	for _, msg := range []string{"hello", strings.Repeat("long message ", 20000)} {
		if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, echo, err := conn.Read(ctx)
		if err != nil || string(echo) != msg {
			t.Fatalf("the echo: %v, %d bytes, want %d", err, len(echo), len(msg))
		}
		_, said, err := conn.Read(ctx)
		if err != nil || strings.Contains(string(said), s.key) || !strings.HasPrefix(string(said), "you sent Bearer ") {
			t.Fatalf("the service's message with the key: %v %q", err, said)
		}
	}
	if err := conn.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("closing: %v", err)
	}
	if s.upgraded.Load() != 1 {
		t.Errorf("%d upgrades reached the service", s.upgraded.Load())
	}
}
