package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/upstream"
)

// The broker end to end: agents created with the org's agents policy, their
// AppRole tokens, the engine's proxy path through Vault's ACL, the portal's
// /broker route, and a fake service that checks what it receives.

const (
	brokerKeyA = "sk_test_INTEGRATIONkeyA0123456789"
	brokerKeyB = "sk_test_INTEGRATIONkeyB0123456789"
)

// brokerOrg provisions org with a custom service "local" on up and the
// credentials key-a (up's key) and key-b.
func brokerOrg(t *testing.T, name string, up *upstream.Server) string {
	t.Helper()
	org := newOrg(t, name)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	mount := contract.Mount(org)
	write(t, admin, mount+"/services/local", map[string]interface{}{
		"types": "api_key", "base_urls": up.URL,
		"verify": map[string]interface{}{"method": "GET", "url": up.URL + "/v1/balance", "expect_status": 200},
	})
	write(t, admin, mount+"/creds/key-a", map[string]interface{}{"type": "api_key", "service": "local", "api_key": brokerKeyA})
	write(t, admin, mount+"/creds/key-b", map[string]interface{}{"type": "api_key", "service": "local", "api_key": brokerKeyB})
	return org
}

func write(t *testing.T, c *api.Client, path string, data map[string]interface{}) *api.Secret {
	t.Helper()
	s, err := c.Logical().WriteWithContext(context.Background(), path, data)
	if err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	return s
}

func startFake(t *testing.T) *upstream.Server {
	t.Helper()
	up, err := upstream.Start(upstream.Options{Key: brokerKeyA, Record: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	return up
}

// managerClient holds only the org's agents policy, as a trusted person
// managing agents would.
func managerClient(t *testing.T, org string) *api.Client {
	t.Helper()
	tok, err := vault.Token(context.Background(), time.Hour, provision.AgentsPolicy(org))
	if err != nil {
		t.Fatal(err)
	}
	return vault.ClientWithToken(tok)
}

// newAgent creates an agent with the agents policy and logs it in,
// returning its Vault token.
func newAgent(t *testing.T, org string, spec provision.AgentSpec) string {
	t.Helper()
	login, err := provision.CreateAgent(context.Background(), managerClient(t, org), org, spec)
	if err != nil {
		t.Fatalf("creating agent %s: %v", spec.Name, err)
	}
	return agentLogin(t, login)
}

func agentLogin(t *testing.T, login *provision.AgentLogin) string {
	t.Helper()
	s, err := vault.ClientWithToken("").Logical().WriteWithContext(context.Background(), "auth/approle/login", map[string]interface{}{
		"role_id": login.RoleID, "secret_id": login.SecretID,
	})
	if err != nil {
		t.Fatalf("agent login: %v", err)
	}
	return s.Auth.ClientToken
}

func startPortal(t *testing.T) string {
	t.Helper()
	return servePortal(t, portal.Config{}).URL()
}

// servePortal runs a portal on a free port until the test ends: against
// the package's Vault with its edge key unless cfg names others, logging
// nowhere unless cfg has a logger.
func servePortal(t *testing.T, cfg portal.Config) *portal.Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.VaultAddr == "" {
		cfg.VaultAddr, cfg.EdgeKey = vault.Addr, vault.PortalEdgeKey()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := portal.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return srv
}

// viaVault calls the engine's proxy path with token.
func viaVault(token, org, cred string, data map[string]interface{}) (*api.Secret, error) {
	return vault.ClientWithToken(token).Logical().WriteWithContext(context.Background(), contract.Mount(org)+"/proxy/"+cred, data)
}

// viaVaultCall is the Vault path with method and path in the Vault path
// (proxy/<cred>/<METHOD>/<path>), as agents with rules call it.
func viaVaultCall(token, org, cred, method, pathAndQuery string) (*api.Secret, error) {
	p, q, _ := strings.Cut(pathAndQuery, "?")
	data := map[string]interface{}{}
	if q != "" {
		data["query"] = q
	}
	return vault.ClientWithToken(token).Logical().WriteWithContext(context.Background(), contract.Mount(org)+"/proxy/"+cred+"/"+method+p, data)
}

// viaPortal calls the portal's broker route with token as a bearer token.
func viaPortal(t *testing.T, base, token, method, path string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, out
}

func TestOpenAISDKThroughTheBroker(t *testing.T) {
	up := startFake(t)
	org := brokerOrg(t, "broker-sdk", up)
	token := newAgent(t, org, provision.AgentSpec{Name: "assistant", Creds: []string{"key-a"}})
	up.SetForbidden(token)
	base := startPortal(t)

	// The official SDK, unchanged: its base URL is the broker and its API
	// key is the agent's Vault token.
	sdk := func(key string) *openai.Client {
		c := openai.NewClient(
			option.WithBaseURL(base+"/broker/"+org+"/key-a/v1/"),
			option.WithAPIKey(key),
			option.WithMaxRetries(0),
		)
		return &c
	}
	page, err := sdk(token).Models.List(context.Background())
	if err != nil {
		t.Fatalf("listing models through the broker: %v", err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != "fake-model-1" {
		t.Errorf("models = %+v", page.Data)
	}
	reqs := up.Requests()
	if len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer "+brokerKeyA || reqs[0].Path != "/v1/models" {
		t.Fatalf("the service saw %d request(s); the first with the real key: %v", len(reqs), len(reqs) == 1 && reqs[0].Authorized)
	}
	if up.Violations() != 0 {
		t.Errorf("the agent's Vault token reached the service")
	}
	if reqs[0].Header.Get("User-Agent") == "" || reqs[0].Header.Get("X-Stainless-Lang") == "" {
		t.Errorf("the SDK's own headers were not forwarded: %v", reqs[0].Header)
	}

	// The SDK reports the broker's refusals in its own error type.
	_, err = sdk("hvs.not-a-real-token-0000000000").Models.List(context.Background())
	// An unknown token is a 401, so the SDK reports an authentication
	// error (and an agent logs in again) rather than a permission error.
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || !strings.Contains(apiErr.Message, "invalid or expired") {
		t.Errorf("bad token: %v", err)
	}

	// The agent's use is recorded under its name.
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	s, err := admin.Logical().ReadWithContext(context.Background(), contract.Mount(org)+"/creds/key-a")
	if err != nil {
		t.Fatal(err)
	}
	if s.Data["last_used_by"] != provision.AgentName(org, "assistant") || s.Data["last_used_at"] == "" {
		t.Errorf("last use = %v by %v", s.Data["last_used_at"], s.Data["last_used_by"])
	}
}

func TestBrokerThroughVaultAPI(t *testing.T) {
	up := startFake(t)
	org := brokerOrg(t, "broker-api", up)
	token := newAgent(t, org, provision.AgentSpec{Name: "cli", Creds: []string{"key-a"}})
	s, err := viaVault(token, org, "key-a", map[string]interface{}{"method": "GET", "path": "/v1/balance"})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := base64.StdEncoding.DecodeString(s.Data["body"].(string))
	if fmt.Sprint(s.Data["status"]) != "200" || !strings.Contains(string(body), `"amount":4242`) {
		t.Errorf("proxy answered %v %s", s.Data["status"], body)
	}
	// verify uses the same injection.
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	v := write(t, admin, contract.Mount(org)+"/creds/key-a/verify", nil)
	if v.Data["verified"] != true || v.Data["status"] != "active" {
		t.Errorf("verify = %v", v.Data)
	}
}

// Long on purpose: one story told in order, whose steps depend on the ones before.
func TestAgentsAreConfinedByVault(t *testing.T) {
	up := startFake(t)
	org := brokerOrg(t, "confined", up)
	other := brokerOrg(t, "confined-other", up)
	base := startPortal(t)
	ctx := context.Background()

	onlyA := newAgent(t, org, provision.AgentSpec{Name: "only-a", Creds: []string{"key-a"}})
	getOnly := newAgent(t, org, provision.AgentSpec{Name: "get-only", Creds: []string{"key-a"}, Methods: []string{"GET"}, Paths: []string{"/v1/balance"}})
	otherOrgs := newAgent(t, other, provision.AgentSpec{Name: "outsider", Creds: []string{"key-a"}})
	short := newAgent(t, org, provision.AgentSpec{Name: "short", Creds: []string{"key-a"}, TokenTTL: 2 * time.Second})

	allowed := func(token, org, cred, method, path string) bool {
		t.Helper()
		_, err := viaVaultCall(token, org, cred, method, path)
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
			return false
		}
		if err != nil {
			t.Fatalf("%s %s on %s/%s: %v", method, path, org, cred, err)
		}
		// The portal must agree with Vault.
		status, _, body := viaPortal(t, base, token, method, "/broker/"+org+"/"+cred+path, nil)
		if status == http.StatusForbidden {
			t.Fatalf("Vault allowed %s %s but the portal refused: %s", method, path, body)
		}
		return true
	}
	deniedEverywhere := func(desc, token, org, cred, method, path string) {
		t.Helper()
		if allowed(token, org, cred, method, path) {
			t.Errorf("%s: allowed", desc)
		}
		status, _, body := viaPortal(t, base, token, method, "/broker/"+org+"/"+cred+path, nil)
		if status != http.StatusForbidden || !strings.Contains(string(body), "permission denied") {
			t.Errorf("%s through the portal: %d %s", desc, status, body)
		}
	}

	if !allowed(onlyA, org, "key-a", "GET", "/v1/balance") {
		t.Fatalf("agent denied its own credential")
	}
	deniedEverywhere("agent for key-a on key-b", onlyA, org, "key-b", "GET", "/v1/balance")
	deniedEverywhere("agent of another org", otherOrgs, org, "key-a", "GET", "/v1/balance")

	if !allowed(getOnly, org, "key-a", "GET", "/v1/balance") {
		t.Fatalf("GET-only agent denied a GET")
	}
	if !allowed(getOnly, org, "key-a", "GET", "/v1/balance?limit=3&x=/v1/charges") {
		t.Fatalf("the query is not part of the rule, yet it decided")
	}
	deniedEverywhere("GET-only agent sending POST", getOnly, org, "key-a", "POST", "/v1/balance")
	deniedEverywhere("agent limited to /v1/balance on /v1/models", getOnly, org, "key-a", "GET", "/v1/models")
	// Rules are whole segments: no prefix of a name, no path in a query.
	deniedEverywhere("/v1/balance on /v1/balance_transactions", getOnly, org, "key-a", "GET", "/v1/balance_transactions")
	deniedEverywhere("/v1/balance on /v1/charges?x=/v1/balance", getOnly, org, "key-a", "GET", "/v1/charges?x=/v1/balance")
	deniedEverywhere("/v1/balance on a path below it", getOnly, org, "key-a", "GET", "/v1/balance/x")
	// An agent with rules holds no grant on the form with method and path
	// as fields, where they would not be in the path Vault checks.
	_, err := viaVault(getOnly, org, "key-a", map[string]interface{}{"method": "GET", "path": "/v1/balance"})
	assertStatus(t, err, http.StatusForbidden, "permission denied")
	// Path tricks are refused before they reach Vault's ACL or the service.
	for _, p := range []string{"/v1/balance/..;/charges", "/v1/balance/%2e%2e/charges", "/v1/balance/%252e%252e/charges", "/v1/balance%2F..%2Fcharges"} {
		status, _, body := viaPortal(t, base, getOnly, "GET", "/broker/"+org+"/key-a"+p, nil)
		if status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", p, status, body)
		}
	}
	req, _ := http.NewRequest("GET", base+"/broker/"+org+"/key-a/v1/balance", nil)
	req.Header.Set("Authorization", "Bearer "+getOnly)
	req.Header.Set("X-Original-URL", "/v1/charges")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("X-Original-URL: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	if !allowed(short, org, "key-a", "GET", "/v1/balance") {
		t.Fatalf("short-lived agent denied before expiry")
	}
	time.Sleep(3 * time.Second)
	// An expired token is not a permission problem: the agent is told to
	// log in again, by Vault (403, "invalid token") and the portal (401).
	_, err = viaVaultCall(short, org, "key-a", "GET", "/v1/balance")
	assertStatus(t, err, http.StatusForbidden, "invalid token")
	if status, h, body := viaPortal(t, base, short, "GET", "/broker/"+org+"/key-a/v1/balance", nil); status != http.StatusUnauthorized ||
		!strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") || h.Get("X-Should-Retry") != "false" {
		t.Errorf("expired token through the portal: %d %v %s", status, h, body)
	}

	agents, err := provision.ListAgents(ctx, managerClient(t, org), org)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]provision.Agent{}
	for _, a := range agents {
		got[a.Name] = a
	}
	if len(agents) != 3 || fmt.Sprint(got["get-only"].Methods, got["get-only"].Paths, got["get-only"].Creds) != "[GET] [/v1/balance] [key-a]" ||
		got["only-a"].TokenTTL != provision.DefaultAgentTokenTTL {
		t.Errorf("agents = %+v", agents)
	}
}

func TestDeletingAnAgentEndsItsTokens(t *testing.T) {
	up := startFake(t)
	org := brokerOrg(t, "agent-delete", up)
	ctx := context.Background()
	mgr := managerClient(t, org)
	spec := provision.AgentSpec{Name: "temp", Creds: []string{"key-a"}}
	login, err := provision.CreateAgent(ctx, mgr, org, spec)
	if err != nil {
		t.Fatal(err)
	}
	token := agentLogin(t, login)
	if _, err := viaVault(token, org, "key-a", map[string]interface{}{"method": "GET", "path": "/v1/balance"}); err != nil {
		t.Fatalf("before delete: %v", err)
	}
	if _, err := provision.CreateAgent(ctx, mgr, org, spec); !errors.Is(err, provision.ErrAgentExists) {
		t.Errorf("creating it twice: %v", err)
	}

	if err := provision.DeleteAgent(ctx, mgr, org, "temp"); err != nil {
		t.Fatal(err)
	}
	_, err = viaVault(token, org, "key-a", map[string]interface{}{"method": "GET", "path": "/v1/balance"})
	assertStatus(t, err, http.StatusForbidden, "permission denied")
	if _, err := vault.ClientWithToken("").Logical().WriteWithContext(ctx, "auth/approle/login", map[string]interface{}{
		"role_id": login.RoleID, "secret_id": login.SecretID,
	}); err == nil {
		t.Errorf("the deleted agent's secret_id still logs in")
	}

	// An agent of the same name is new: the old token stays dead.
	fresh := newAgent(t, org, spec)
	if _, err := viaVault(fresh, org, "key-a", map[string]interface{}{"method": "GET", "path": "/v1/balance"}); err != nil {
		t.Fatalf("the new agent: %v", err)
	}
	_, err = viaVault(token, org, "key-a", map[string]interface{}{"method": "GET", "path": "/v1/balance"})
	assertStatus(t, err, http.StatusForbidden, "permission denied")

	if err := provision.DeleteAgent(ctx, mgr, org, "nobody"); !errors.Is(err, provision.ErrAgentNotFound) {
		t.Errorf("deleting an unknown agent: %v", err)
	}
	// Agent managers cannot reach the org's credentials themselves.
	_, err = mgr.Logical().ReadWithContext(ctx, contract.Mount(org)+"/creds/key-a")
	assertStatus(t, err, http.StatusForbidden, "permission denied")
}

// Long on purpose: one story told in order, whose steps depend on the ones before.
func TestBrokerGuardsThroughThePortal(t *testing.T) {
	up := startFake(t)
	elsewhere := startFake(t)
	org := brokerOrg(t, "broker-guards", up)
	token := newAgent(t, org, provision.AgentSpec{Name: "guarded", Creds: []string{"key-a"}})
	up.SetForbidden(token)
	elsewhere.SetForbidden(brokerKeyA)
	base := startPortal(t)
	cred := "/broker/" + org + "/key-a"

	t.Run("redirect to another host carries no credential", func(t *testing.T) {
		// Go's client follows the redirect the broker passes on.
		status, _, _ := viaPortal(t, base, token, "GET", cred+"/redirect?to="+url.QueryEscape(elsewhere.URL+"/echo"), nil)
		reqs := elsewhere.Requests()
		if len(reqs) != 1 || status != http.StatusOK {
			t.Fatalf("status %d; the other host saw %d request(s)", status, len(reqs))
		}
		// (Whether the agent's own client sends its Vault token along is
		// that client's choice: Go's keeps Authorization for the same host
		// name on another port, as here, and drops it for other hosts.)
		if elsewhere.Violations() != 0 || strings.Contains(fmt.Sprint(reqs[0].Header), brokerKeyA) {
			t.Errorf("the redirect carried the credential to the other host")
		}
	})
	t.Run("redirect within the service stays on the broker", func(t *testing.T) {
		up.Reset()
		status, _, body := viaPortal(t, base, token, "GET", cred+"/redirect?to="+url.QueryEscape("/v1/balance"), nil)
		if status != http.StatusOK || !strings.Contains(string(body), "4242") || len(up.Requests()) != 2 {
			t.Errorf("status %d, %d upstream requests: %s", status, len(up.Requests()), body)
		}
	})
	t.Run("echoed secret comes back scrubbed", func(t *testing.T) {
		status, headers, body := viaPortal(t, base, token, "POST", cred+"/echo?x=1", []byte(`{"hello":"world"}`))
		all := string(body) + fmt.Sprint(headers)
		if status != http.StatusOK || strings.Contains(all, brokerKeyA) || strings.Contains(all, base64.StdEncoding.EncodeToString([]byte("Bearer "+brokerKeyA))) {
			t.Errorf("status %d; the secret came back: %v", status, strings.Contains(all, brokerKeyA))
		}
		var echo struct{ Body string }
		if err := json.Unmarshal(body, &echo); err != nil || echo.Body != `{"hello":"world"}` {
			t.Errorf("the body did not reach the service: %q %v", echo.Body, err)
		}
		if headers.Get("X-Echo-Authorization") != "Bearer [REDACTED]" {
			t.Errorf("X-Echo-Authorization = %q", headers.Get("X-Echo-Authorization"))
		}
		if up.Violations() != 0 {
			t.Errorf("the Vault token reached the service")
		}
	})
	t.Run("oversize bodies are cut with a clear error", func(t *testing.T) {
		admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
		write(t, admin, contract.Mount(org)+"/config", map[string]interface{}{"broker_max_body": 4096})
		// The edge holds a token's injection (with the limits) for a few
		// seconds; a fresh token sees the new limit at once.
		token := newAgent(t, org, provision.AgentSpec{Name: "guarded-small", Creds: []string{"key-a"}})
		status, headers, body := viaPortal(t, base, token, "GET", cred+"/bytes?n=5000", nil)
		if status != http.StatusBadGateway || headers.Get("X-Broker-Error") != "true" || headers.Get("X-Should-Retry") != "false" ||
			!strings.Contains(string(body), "larger than broker_max_body (4096 bytes)") {
			t.Errorf("oversize answer: %d %.200s", status, body)
		}
		// Without a length up front, an answer over the limit is cut off:
		// its status is out already, and a clean end would pass a
		// truncated body off as whole.
		req, _ := http.NewRequest("GET", base+cred+"/bytes?n=5000&chunked=1", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Errorf("a chunked oversize answer ended cleanly after %d bytes", n)
			}
		}
		status, _, body = viaPortal(t, base, token, "POST", cred+"/echo", make([]byte, 5000))
		if status != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "broker_max_body") {
			t.Errorf("oversize request: %d %.200s", status, body)
		}
	})
	t.Run("no token", func(t *testing.T) {
		resp, err := http.Get(base + cred + "/v1/balance")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
}

// TestRecreatedCredentialIsNotTheAgents: deleting a credential and
// creating another of the same name does not give the new one to the
// agents that had the old one (before, their policies silently covered
// it); the agents list says which credentials an agent can no longer use.
func TestRecreatedCredentialIsNotTheAgents(t *testing.T) {
	up := startFake(t)
	org := brokerOrg(t, "recreated", up)
	base := startPortal(t)
	ctx := context.Background()
	login, err := provision.CreateAgent(ctx, managerClient(t, org), org, provision.AgentSpec{Name: "old-grant", Creds: []string{"key-a", "key-b"}})
	if err != nil {
		t.Fatal(err)
	}
	token := agentLogin(t, login)
	if _, err := viaVaultCall(token, org, "key-a", "GET", "/v1/balance"); err != nil {
		t.Fatalf("before: %v", err)
	}
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	mount := contract.Mount(org)
	if _, err := admin.Logical().DeleteWithContext(ctx, mount+"/creds/key-a"); err != nil {
		t.Fatal(err)
	}
	write(t, admin, mount+"/creds/key-a", map[string]interface{}{"type": "api_key", "service": "local", "api_key": brokerKeyA})

	_, err = viaVaultCall(token, org, "key-a", "GET", "/v1/balance")
	assertStatus(t, err, http.StatusForbidden, "created after agent old-grant was given that name")
	fresh := agentLogin(t, login) // a new token: nothing held at the edge
	status, _, body := viaPortal(t, base, fresh, "GET", "/broker/"+org+"/key-a/v1/balance", nil)
	if status != http.StatusForbidden || !strings.Contains(string(body), "created after agent") {
		t.Errorf("through the edge: %d %s", status, body)
	}
	// The credential it still has is untouched.
	if _, err := viaVaultCall(token, org, "key-b", "GET", "/v1/echo"); err != nil {
		t.Errorf("key-b: %v", err)
	}
	agents, err := provision.ListAgents(ctx, managerClient(t, org), org)
	if err != nil || len(agents) != 1 || fmt.Sprint(agents[0].Stale) != "[key-a]" {
		t.Fatalf("agents = %+v (%v)", agents, err)
	}
	// Giving it again (a new agent) restores access.
	if err := provision.DeleteAgent(ctx, managerClient(t, org), org, "old-grant"); err != nil {
		t.Fatal(err)
	}
	again := newAgent(t, org, provision.AgentSpec{Name: "old-grant", Creds: []string{"key-a"}})
	if _, err := viaVaultCall(again, org, "key-a", "GET", "/v1/balance"); err != nil {
		t.Errorf("given again: %v", err)
	}
}
