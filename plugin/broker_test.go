package credentials

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/testing/upstream"
)

const (
	brokerKey      = "sk_test_BROKERcanary0123456789xyz"
	brokerPassword = "pw-BROKER-canary-42"
	vaultTokenLike = "hvs.CALLERTOKENcanary0123456789"
)

// startUpstream runs a fake service that accepts brokerKey (and the
// basic-auth pair bot/brokerPassword) and refuses any request carrying the
// caller's Vault token.
func startUpstream(tb testing.TB) *upstream.Server {
	tb.Helper()
	up, err := upstream.Start(upstream.Options{
		Key: brokerKey, User: "bot", Password: brokerPassword,
		Forbidden: []string{vaultTokenLike}, Record: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(up.Close)
	return up
}

// localService defines a custom service on the fake upstream; loopback
// targets are reachable because the test backend allows 127.0.0.0/8, as
// the operator setting does for the integration tests.
func localService(tb testing.TB, b *backend, s logical.Storage, name string, fields map[string]interface{}) {
	tb.Helper()
	data := map[string]interface{}{"types": "api_key,password"}
	for k, v := range fields {
		data[k] = v
	}
	mustOK(tb, do(tb, b, s, logical.CreateOperation, "services/"+name, data))
}

func brokerFixture(tb testing.TB) (*backend, logical.Storage, *upstream.Server) {
	tb.Helper()
	b, s, _ := getTestBackend(tb)
	up := startUpstream(tb)
	localService(tb, b, s, "local", map[string]interface{}{"base_urls": up.URL})
	mustOK(tb, do(tb, b, s, logical.CreateOperation, "creds/key", map[string]interface{}{
		"type": "api_key", "service": "local", "api_key": brokerKey,
	}))
	return b, s, up
}

// proxyCall calls proxy/<name> and returns the response or the error.
func proxyCall(b *backend, s logical.Storage, name string, data map[string]interface{}) (*logical.Response, error) {
	return b.HandleRequest(context.Background(), &logical.Request{
		Operation:   logical.UpdateOperation,
		Path:        "proxy/" + name,
		Data:        data,
		Storage:     s,
		DisplayName: "token-test-agent",
	})
}

// proxyOK calls proxy/<name>, fails on any error, and returns the status,
// headers and decoded body.
func proxyOK(tb testing.TB, b *backend, s logical.Storage, name string, data map[string]interface{}) (int, map[string]interface{}, string) {
	tb.Helper()
	resp, err := proxyCall(b, s, name, data)
	if err != nil {
		tb.Fatalf("proxy/%s: %v", name, err)
	}
	mustOK(tb, resp)
	body, err := base64.StdEncoding.DecodeString(resp.Data["body"].(string))
	if err != nil {
		tb.Fatalf("body is not base64: %v", err)
	}
	return resp.Data["status"].(int), resp.Data["headers"].(map[string]interface{}), string(body)
}

// assertNoSecret fails when text holds secret in any encoding an echo uses.
func assertNoSecret(tb testing.TB, where, text, secret string) {
	tb.Helper()
	forms := []string{secret, url.QueryEscape(secret), base64.StdEncoding.EncodeToString([]byte(secret))}
	for _, f := range forms {
		if strings.Contains(text, f) {
			tb.Errorf("%s contains the secret (form %q)", where, f[:4]+"…")
		}
	}
}

// Long on purpose: one case per injection style.
func TestProxyInjectsEachStyle(t *testing.T) {
	cases := []struct {
		desc      string
		injection map[string]interface{}
		credType  string
		// check inspects what the upstream received.
		check func(t *testing.T, r upstream.Request)
	}{
		{"bearer by default", nil, typeAPIKey, func(t *testing.T, r upstream.Request) {
			if got := r.Header.Get("Authorization"); got != "Bearer "+brokerKey {
				t.Errorf("Authorization = %q", got)
			}
		}},
		{"named header with version header", map[string]interface{}{"api_key": map[string]interface{}{
			"style": "header", "header": "X-Api-Key", "format": "{secret}", "headers": map[string]interface{}{"Anthropic-Version": "2023-06-01"},
		}}, typeAPIKey, func(t *testing.T, r upstream.Request) {
			if r.Header.Get("X-Api-Key") != brokerKey || r.Header.Get("Anthropic-Version") != "2023-06-01" {
				t.Errorf("headers = %v", r.Header)
			}
			if r.Header.Get("Authorization") != "" {
				t.Errorf("caller's Authorization reached the service")
			}
		}},
		{"basic with the key as user", map[string]interface{}{"api_key": map[string]interface{}{"style": "basic"}}, typeAPIKey,
			func(t *testing.T, r upstream.Request) {
				req := &http.Request{Header: r.Header}
				if u, p, ok := req.BasicAuth(); !ok || u != brokerKey || p != "" {
					t.Errorf("basic auth = %q, %v", u, ok)
				}
			}},
		{"query parameter", map[string]interface{}{"api_key": map[string]interface{}{"style": "query", "query": "key"}}, typeAPIKey,
			func(t *testing.T, r upstream.Request) {
				q, _ := url.ParseQuery(r.RawQuery)
				if q.Get("key") != brokerKey || q.Get("page") != "2" || len(q["key"]) != 1 {
					t.Errorf("query = %v", q)
				}
			}},
		{"password as basic", nil, typePassword, func(t *testing.T, r upstream.Request) {
			req := &http.Request{Header: r.Header}
			if u, p, ok := req.BasicAuth(); !ok || u != "bot" || p != brokerPassword {
				t.Errorf("basic auth user %q ok %v", u, ok)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			b, s, _ := getTestBackend(t)
			up := startUpstream(t)
			fields := map[string]interface{}{"base_urls": up.URL}
			if tc.injection != nil {
				fields["injection"] = tc.injection
			}
			localService(t, b, s, "svc", fields)
			cred := map[string]interface{}{"type": tc.credType, "service": "svc"}
			secret := brokerKey
			if tc.credType == typePassword {
				cred["username"], cred["password"] = "bot", brokerPassword
				secret = brokerPassword
			} else {
				cred["api_key"] = brokerKey
			}
			mustOK(t, do(t, b, s, logical.CreateOperation, "creds/c", cred))

			status, headers, body := proxyOK(t, b, s, "c", map[string]interface{}{
				"method": "GET", "path": "/echo?page=2&key=caller-supplied",
				"headers": map[string]interface{}{"Authorization": "Bearer " + vaultTokenLike, "X-Api-Key": vaultTokenLike},
			})
			if status != http.StatusOK {
				t.Fatalf("status = %d, body %s", status, body)
			}
			reqs := up.Requests()
			if len(reqs) != 1 || !reqs[0].Authorized {
				t.Fatalf("upstream saw %d requests, authorized=%v", len(reqs), len(reqs) == 1 && reqs[0].Authorized)
			}
			if up.Violations() != 0 {
				t.Errorf("the caller's Vault token reached the upstream")
			}
			tc.check(t, reqs[0])
			assertNoSecret(t, "body", body, secret)
			assertNoSecret(t, "headers", fmt.Sprint(headers), secret)
			if !strings.Contains(body, "[REDACTED]") {
				t.Errorf("echoed secret not marked as redacted: %s", body)
			}
		})
	}
}

func TestProxyStripsCallerHeaders(t *testing.T) {
	b, s, up := brokerFixture(t)
	proxyOK(t, b, s, "key", map[string]interface{}{
		"method": "POST", "path": "/echo",
		"headers": map[string]interface{}{
			"Authorization":          "Bearer " + vaultTokenLike,
			"Proxy-Authorization":    "Basic eA==",
			"X-Vault-Token":          vaultTokenLike,
			"Cookie":                 "session=abc",
			"Connection":             "X-Hop",
			"X-Hop":                  "1",
			"Keep-Alive":             "timeout=5",
			"Upgrade":                "websocket",
			"X-Forwarded-For":        "10.0.0.1",
			"X-HTTP-Method-Override": "DELETE",
			"Content-Type":           "application/json",
			"X-Request-Id":           "req-1",
		},
		"body": base64.StdEncoding.EncodeToString([]byte(`{"a":1}`)),
	})
	r := up.Requests()[0]
	for _, h := range []string{"Proxy-Authorization", "X-Vault-Token", "Cookie", "X-Hop", "Keep-Alive", "Upgrade", "X-Forwarded-For", "X-Http-Method-Override"} {
		if v := r.Header.Get(h); v != "" {
			t.Errorf("%s reached the service: %q", h, v)
		}
	}
	if r.Header.Get("Authorization") != "Bearer "+brokerKey {
		t.Errorf("Authorization is not the injected credential")
	}
	if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Request-Id") != "req-1" {
		t.Errorf("ordinary headers were not forwarded: %v", r.Header)
	}
	if string(r.Body) != `{"a":1}` || r.Method != http.MethodPost {
		t.Errorf("upstream got %s %q", r.Method, r.Body)
	}
}

func TestProxyScrubsEchoedSecret(t *testing.T) {
	b, s, _ := brokerFixture(t)
	_, headers, body := proxyOK(t, b, s, "key", map[string]interface{}{"path": "/echo"})
	all := body + fmt.Sprint(headers)
	assertNoSecret(t, "response", all, brokerKey)
	// The fake also echoes base64("key=<secret>;"), where the secret sits
	// at an offset that is not a multiple of three.
	if strings.Contains(all, base64.StdEncoding.EncodeToString([]byte("key=" + brokerKey + ";"))[8:30]) {
		t.Errorf("the secret's base64 form at an odd alignment was not scrubbed")
	}
	if got := headers["X-Echo-Authorization"]; fmt.Sprint(got) != "[Bearer [REDACTED]]" {
		t.Errorf("X-Echo-Authorization = %v", got)
	}
}

func TestProxyRefusesPathsOutsideBaseURLs(t *testing.T) {
	b, s, _ := getTestBackend(t)
	up := startUpstream(t)
	other := startUpstream(t)
	localService(t, b, s, "based", map[string]interface{}{"base_urls": up.URL + "/api"})
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/c", map[string]interface{}{
		"type": "api_key", "service": "based", "api_key": brokerKey,
	}))
	for _, p := range []string{
		"", "api/x", "../x", "/../x", "/x/../../echo", "/%2e%2e/echo", "/%2E%2e%2Fecho", "/x/%2e", "//evil.example/x",
		"/x#frag", "/a\\b", "/a%5cb", "/a%00b", "/a b", "/ä",
		"https://evil.example/api/x", other.URL + "/api/x", up.URL + "/echo", up.URL + "/apix",
		up.URL + "/api/../echo", "http://user@" + strings.TrimPrefix(up.URL, "http://") + "/api/x",
		"ftp://" + strings.TrimPrefix(up.URL, "http://") + "/api/x", "/x?a=1?b=2", "/x?token=" + vaultTokenLike,
	} {
		t.Run(p, func(t *testing.T) {
			resp, err := proxyCall(b, s, "c", map[string]interface{}{"path": p})
			if err != nil || resp == nil || !resp.IsError() {
				t.Fatalf("path %q: want a 400 error response, got %v, %v", p, resp, err)
			}
		})
	}
	if n := len(up.Requests()) + len(other.Requests()); n != 0 {
		t.Errorf("%d request(s) reached a service", n)
	}
	// Inside the base path, relative and absolute, the call goes through.
	for _, p := range []string{"/x", "/", up.URL + "/api/x?y=1", up.URL + "/api"} {
		proxyOK(t, b, s, "c", map[string]interface{}{"path": p})
	}
	var got []string
	for _, r := range up.Requests() {
		got = append(got, r.Path+"?"+r.RawQuery)
	}
	if fmt.Sprint(got) != "[/api/x? /api/? /api/x?y=1 /api?]" {
		t.Errorf("the service saw %v", got)
	}
}

func TestProxyRefusesPrivateTargets(t *testing.T) {
	b, s, _ := getTestBackend(t)
	// No private targets: the operator's default.
	b.egress = &egressRuntime{guard: &egress.Guard{}}
	up := startUpstream(t)
	port := up.URL[strings.LastIndex(up.URL, ":")+1:]
	// localhost is refused on the address it resolves to, at dial time,
	// as a DNS name rebound to an internal address would be.
	for name, base := range map[string]string{"literal": up.URL, "dns": "http://localhost:" + port} {
		mustOK(t, do(t, b, s, logical.CreateOperation, "services/"+name, map[string]interface{}{
			"types": "api_key", "base_urls": base,
		}))
		mustOK(t, do(t, b, s, logical.CreateOperation, "creds/"+name, map[string]interface{}{
			"type": "api_key", "service": name, "api_key": brokerKey,
		}))
		_, err := proxyCall(b, s, name, map[string]interface{}{"path": "/v1/ping"})
		assertCoded(t, err, http.StatusBadGateway, "loopback, private or link-local")
	}
	if n := len(up.Requests()); n != 0 {
		t.Errorf("%d request(s) reached the loopback service", n)
	}
}

func TestProxyReturnsRedirectsWithoutFollowing(t *testing.T) {
	b, s, up := brokerFixture(t)
	elsewhere := startUpstream(t)
	status, headers, _ := proxyOK(t, b, s, "key", map[string]interface{}{
		"path": "/redirect?to=" + url.QueryEscape(elsewhere.URL+"/echo"),
	})
	if status != http.StatusFound || fmt.Sprint(headers["Location"]) != "["+elsewhere.URL+"/echo]" {
		t.Errorf("status %d, Location %v", status, headers["Location"])
	}
	if n := len(elsewhere.Requests()); n != 0 {
		t.Errorf("the redirect was followed: %d request(s) elsewhere", n)
	}
	// A redirect within the service says where, relative to its base URL.
	resp, err := proxyCall(b, s, "key", map[string]interface{}{"path": "/redirect?to=" + url.QueryEscape("/v1/ping?x=1")})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Data["redirect_path"]; got != "/v1/ping?x=1" {
		t.Errorf("redirect_path = %v", got)
	}
	if len(up.Requests()) != 2 {
		t.Errorf("upstream saw %d requests, want 2", len(up.Requests()))
	}
}

func TestProxyBoundsSizeAndTime(t *testing.T) {
	b, s, _ := brokerFixture(t)
	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{
		"broker_max_body": 1000, "broker_timeout": 1,
	}))
	if status, _, body := proxyOK(t, b, s, "key", map[string]interface{}{"path": "/bytes?n=1000"}); status != 200 || len(body) != 1000 {
		t.Errorf("a body of exactly the limit: status %d, %d bytes", status, len(body))
	}
	_, err := proxyCall(b, s, "key", map[string]interface{}{"path": "/bytes?n=1001"})
	assertCoded(t, err, http.StatusBadGateway, "larger than broker_max_body (1000 bytes)")

	big := base64.StdEncoding.EncodeToString(make([]byte, 1001))
	_, err = proxyCall(b, s, "key", map[string]interface{}{"method": "POST", "path": "/echo", "body": big})
	assertCoded(t, err, http.StatusRequestEntityTooLarge, "request body is larger than broker_max_body")

	_, err = proxyCall(b, s, "key", map[string]interface{}{"path": "/slow?ms=3000"})
	assertCoded(t, err, http.StatusGatewayTimeout, "did not answer within broker_timeout")
}

func TestProxyEncodedBodies(t *testing.T) {
	b, s, _ := brokerFixture(t)
	// gzip is decoded by the broker and scrubbed like any body.
	_, headers, body := proxyOK(t, b, s, "key", map[string]interface{}{
		"path": "/gzip", "headers": map[string]interface{}{"Accept-Encoding": "br"},
	})
	if body != "echo: Bearer [REDACTED]" || headers["Content-Encoding"] != nil {
		t.Errorf("gzip body = %q, headers %v", body, headers)
	}
	// An encoding the broker cannot read is not passed on unchecked.
	_, err := proxyCall(b, s, "key", map[string]interface{}{"path": "/brotli"})
	assertCoded(t, err, http.StatusBadGateway, "br-encoded")
}

func TestProxyRefusesBadInput(t *testing.T) {
	b, s, up := brokerFixture(t)
	for desc, data := range map[string]map[string]interface{}{
		"lower-case method": {"method": "get", "path": "/v1/ping"},
		"TRACE":             {"method": "TRACE", "path": "/v1/ping"},
		"CONNECT":           {"method": "CONNECT", "path": "/v1/ping"},
		"unknown field":     {"path": "/v1/ping", "url": "x"},
		"bad header name":   {"path": "/v1/ping", "headers": map[string]interface{}{"Bad Name": "x"}},
		"bad header value":  {"path": "/v1/ping", "headers": map[string]interface{}{"X-A": "a\r\nInjected: 1"}},
		"body not base64":   {"path": "/v1/ping", "body": "%%%"},
	} {
		resp, err := proxyCall(b, s, "key", data)
		if err != nil || resp == nil || !resp.IsError() {
			t.Errorf("%s: want a 400 error response, got %v, %v", desc, resp, err)
		}
	}
	_, err := proxyCall(b, s, "missing", map[string]interface{}{"path": "/v1/ping"})
	assertCoded(t, err, http.StatusNotFound, "does not exist")
	if n := len(up.Requests()); n != 0 {
		t.Errorf("%d bad request(s) reached the service", n)
	}
}

// countingStorage counts writes.
type countingStorage struct {
	logical.Storage
	puts atomic.Int64
}

func (c *countingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	c.puts.Add(1)
	return c.Storage.Put(ctx, e)
}

func TestProxyRecordsLastUseWithoutWriting(t *testing.T) {
	b, inner, _ := brokerFixture(t)
	s := &countingStorage{Storage: inner}
	const calls = 50
	var wg sync.WaitGroup
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := proxyCall(b, s, "key", map[string]interface{}{"path": "/v1/ping"})
			if err != nil || resp.IsError() || resp.Data["status"] != 200 {
				t.Errorf("call failed: %v %v", resp, err)
			}
		}()
	}
	wg.Wait()
	if n := s.puts.Load(); n != 0 {
		t.Errorf("%d brokered calls wrote storage %d times, want 0", calls, n)
	}
	read := mustOK(t, do(t, b, s, logical.ReadOperation, "creds/key", nil))
	if read.Data["last_used_at"] == "" || read.Data["last_used_by"] != "token-test-agent" {
		t.Errorf("last use = %v by %v", read.Data["last_used_at"], read.Data["last_used_by"])
	}
	if err := b.periodic(context.Background(), &logical.Request{Storage: s}); err != nil {
		t.Fatal(err)
	}
	if s.puts.Load() == 0 {
		t.Errorf("the periodic flush stored nothing")
	}
	c, err := getCredential(context.Background(), s, "key")
	if err != nil || c.LastUsedBy != "token-test-agent" || c.LastUsedAt.IsZero() {
		t.Errorf("stored last use = %v by %q (%v)", c.LastUsedAt, c.LastUsedBy, err)
	}
}

func TestEntityLabel(t *testing.T) {
	for _, tc := range []struct {
		ent  *logical.Entity
		want string
	}{
		{&logical.Entity{ID: "e1", Name: "orgs-acme-agent-bot"}, "orgs-acme-agent-bot"},
		{&logical.Entity{ID: "e2", Name: "entity_1234", Aliases: []*logical.Alias{{MountType: "approle", Name: "role-uuid", Metadata: map[string]string{"role_name": "bot"}}}}, "approle:bot"},
		{&logical.Entity{ID: "e3", Name: "entity_1234", Aliases: []*logical.Alias{{MountType: "userpass", Name: "alice"}}}, "userpass:alice"},
		{&logical.Entity{ID: "e4"}, "e4"},
	} {
		if got := entityLabel(tc.ent); got != tc.want {
			t.Errorf("entityLabel(%v) = %q, want %q", tc.ent.ID, got, tc.want)
		}
	}
}

func assertCoded(tb testing.TB, err error, status int, contains string) {
	tb.Helper()
	var coded logical.HTTPCodedError
	if !errors.As(err, &coded) {
		tb.Fatalf("error = %v, want HTTP %d", err, status)
	}
	if coded.Code() != status || !strings.Contains(coded.Error(), contains) {
		tb.Fatalf("error = %d %q, want %d containing %q", coded.Code(), coded.Error(), status, contains)
	}
}

func TestProxySeesConfigAndServiceChangesAtOnce(t *testing.T) {
	b, s, up := brokerFixture(t)
	proxyOK(t, b, s, "key", map[string]interface{}{"path": "/bytes?n=2000"})

	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"broker_max_body": 1000}))
	_, err := proxyCall(b, s, "key", map[string]interface{}{"path": "/bytes?n=2000"})
	assertCoded(t, err, http.StatusBadGateway, "larger than broker_max_body (1000 bytes)")

	// Narrowing the service's base URL (which the API refuses while it
	// is in use, so it comes as another node's or an operator's storage
	// change) takes effect on the next call.
	rewriteServiceInUse(t, b, s, "local", map[string]interface{}{
		"types": "api_key,password", "base_urls": up.URL + "/api",
	})
	resp, err := proxyCall(b, s, "key", map[string]interface{}{"path": up.URL + "/v1/ping"})
	if err != nil || resp == nil || !resp.IsError() {
		t.Fatalf("a path outside the new base URL was called: %v %v", resp, err)
	}
	// Another node's change arrives as an invalidation.
	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"broker_max_body": 5000}))
	proxyOK(t, b, s, "key", map[string]interface{}{"path": "/bytes?n=2000"})
	entry, err := logical.StorageEntryJSON(configStorageKey, &mountConfig{BrokerTimeout: 30e9, BrokerMaxBody: 100})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), entry); err != nil {
		t.Fatal(err)
	}
	b.invalidate(context.Background(), configStorageKey)
	_, err = proxyCall(b, s, "key", map[string]interface{}{"path": "/api/x?n=2000"})
	assertCoded(t, err, http.StatusBadGateway, "larger than broker_max_body (100 bytes)")
}

// TestVaultPathBoundsWhatOneTenantHolds: the Vault path buffers calls in
// the plugin process every org shares, so its answers have a ceiling
// below broker_max_body's and its calls in flight per mount a cap (before,
// six concurrent 9 MiB answers took the process to 303 MB, and an admin
// could raise the per-call limit to 100 MiB).
func TestVaultPathBoundsWhatOneTenantHolds(t *testing.T) {
	b, s, _ := brokerFixture(t)
	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"broker_max_body": 64 << 20}))
	_, err := proxyCall(b, s, "key", map[string]interface{}{"path": fmt.Sprintf("/bytes?n=%d", vaultPathMaxAnswer+1)})
	assertCoded(t, err, http.StatusBadGateway, "larger than the Vault path carries")

	b.vaultPathSlotWait = 200 * time.Millisecond
	for i := 0; i < vaultPathConcurrent; i++ {
		b.vaultPathSlots <- struct{}{}
	}
	_, err = proxyCall(b, s, "key", map[string]interface{}{"path": "/v1/ping"})
	assertCoded(t, err, http.StatusServiceUnavailable, "calls in flight")
	// A slot that frees up while a call waits serves it.
	go func() { time.Sleep(50 * time.Millisecond); <-b.vaultPathSlots }()
	proxyOK(t, b, s, "key", map[string]interface{}{"path": "/v1/ping"})
}
