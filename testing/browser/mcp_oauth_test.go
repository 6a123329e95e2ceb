package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hashicorp/vault/api"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/clankteam/credentials/portal/provision"
)

// TestMCPClientSignsInByOAuth: the go-sdk's own OAuth client finds the
// portal's authorization server from /mcp/<org>'s 401, registers, sends
// the person to the consent page (chromium presses Approve), redeems the
// code with PKCE and then lists and calls tools with the token it got. The
// token is refused at another org's MCP server, a refresh token used twice
// ends the grant, and disconnecting the client on the agents page refuses
// its next call.
func TestMCPClientSignsInByOAuth(t *testing.T) {
	b := newBrowser(t)
	root := st.root()
	const cred = "mcp-oauth-key"
	canaryKey(t, cred)
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	if err := root.Sys().EnableAuditWithOptions("mcp-oauth-audit", &api.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": auditLog},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = root.Sys().DisableAudit("mcp-oauth-audit") })
	signIn(t, b, adminUser, adminPass)
	redirect, fetch := approveByPerson(t, b, "oauth-agent", cred)
	var consentHTML string
	handler, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			ClientName: "Test MCP Client", RedirectURIs: []string{redirect},
			GrantTypes: []string{"authorization_code", "refresh_token"}, TokenEndpointAuthMethod: "none",
		}},
		RedirectURL:              redirect,
		AuthorizationCodeFetcher: fetch(&consentHTML),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deleteAgentIfAny("oauth-agent") })

	mcpURL := st.url("/mcp/" + org)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: mcpURL, OAuthHandler: handler}, nil)
	if err != nil {
		t.Fatalf("connecting through OAuth: %v", err)
	}
	defer session.Close()
	if !strings.Contains(consentHTML, "Test MCP Client") || !strings.Contains(consentHTML, "127.0.0.1") {
		t.Errorf("the consent page does not name the client and where the code goes")
	}
	tools, err := session.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, tool := range tools.Tools {
		names[tool.Name] = true
	}
	if !names["list_credentials"] || len(tools.Tools) < 2 {
		t.Fatalf("tools = %v", names)
	}
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "list_credentials"})
	if err != nil || res.IsError {
		t.Fatalf("list_credentials: %v %v", err, res)
	}
	out, _ := json.Marshal(res)
	if !strings.Contains(string(out), cred) {
		t.Fatalf("list_credentials does not list %s: %s", cred, out)
	}

	ts, err := handler.TokenSource(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	// Bound to its resource: another org's MCP server answers 401.
	if status, hdr := mcpPost(t, st.url("/mcp/"+otherOrg), tok.AccessToken); status != http.StatusUnauthorized || !strings.Contains(hdr, "resource_metadata=") {
		t.Errorf("another org's MCP server answered %d (%q), want 401 with resource_metadata", status, hdr)
	}

	// A refresh token rotates; the spent one used again ends the grant.
	first := refresh(t, tok.RefreshToken, http.StatusOK)
	refresh(t, tok.RefreshToken, http.StatusBadRequest)
	refresh(t, first, http.StatusBadRequest)

	// The agents page lists the client; Disconnect ends its tokens.
	b.navigate(st.url("/orgs/" + org + "/agents"))
	if !strings.Contains(b.text("#mcp-clients"), "Test MCP Client") {
		t.Fatalf("the agents page does not list the client: %s", b.text("body"))
	}
	b.click(`#mcp-clients button[id^="disconnect-"]`)
	if status, _ := mcpPost(t, mcpURL, tok.AccessToken); status != http.StatusUnauthorized {
		t.Errorf("a disconnected client's next call answered %d, want 401", status)
	}

	if leak := st.logs.leaks(); leak != "" {
		t.Fatalf("a canary is in the portal's log: %s", leak)
	}
	if c := findCanary(consentHTML + string(out)); c != "" {
		t.Fatalf("a canary reached the client or the page: %s", c)
	}
	audit, err := os.ReadFile(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(audit), "orgs/"+org+"/mcp/token") {
		t.Fatal("the audit log does not show the token exchanges")
	}
	for _, secret := range append([]string{tok.AccessToken, tok.RefreshToken, first}, canaries...) {
		if strings.Contains(string(audit), secret) {
			t.Fatal("the audit log holds a token or a canary in the clear")
		}
	}
}

// TestMCPClientSignsInByMetadataDocument: a client whose client_id is the
// https URL of its metadata document (CIMD). The portal fetches the document
// through the egress guard (the test serves it from 127.0.0.1 with the test
// CA, both allowed by the portal's configuration), shows its name on the
// consent page and sends the code only to a redirect the document lists.
// Removing the agent ends the client's session.
func TestMCPClientSignsInByMetadataDocument(t *testing.T) {
	b := newBrowser(t)
	const cred = "mcp-cimd-key"
	canaryKey(t, cred)
	signIn(t, b, adminUser, adminPass)
	redirect, fetch := approveByPerson(t, b, "cimd-agent", cred)

	var fetched atomic.Int32
	doc := httptest.NewUnstartedServer(nil)
	docURL := ""
	doc.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/client.json" {
			http.NotFound(w, r)
			return
		}
		fetched.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"client_id": docURL, "client_name": "CIMD Test Client", "redirect_uris": []string{redirect},
			"grant_types": []string{"authorization_code", "refresh_token"}, "token_endpoint_auth_method": "none",
		})
	})
	tlsConfig, err := st.vault.CA.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	doc.TLS = tlsConfig
	doc.StartTLS()
	defer doc.Close()
	docURL = doc.URL + "/client.json"

	var consentHTML string
	handler, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		ClientIDMetadataDocumentConfig: &auth.ClientIDMetadataDocumentConfig{URL: docURL},
		RedirectURL:                    redirect,
		AuthorizationCodeFetcher:       fetch(&consentHTML),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deleteAgentIfAny("cimd-agent") })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: st.url("/mcp/" + org), OAuthHandler: handler}, nil)
	if err != nil {
		t.Fatalf("connecting through OAuth with a metadata document: %v", err)
	}
	defer session.Close()
	if fetched.Load() == 0 {
		t.Fatal("the portal never fetched the client's metadata document")
	}
	if !strings.Contains(consentHTML, "CIMD Test Client") {
		t.Errorf("the consent page does not name the client from its document")
	}
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "list_credentials"})
	if err != nil || res.IsError {
		t.Fatalf("list_credentials: %v %v", err, res)
	}
	out, _ := json.Marshal(res)
	if !strings.Contains(string(out), cred) {
		t.Fatalf("list_credentials does not list %s: %s", cred, out)
	}
	b.navigate(st.url("/orgs/" + org + "/agents"))
	if !strings.Contains(b.text("#mcp-clients"), "CIMD Test Client") {
		t.Fatalf("the agents page does not list the client: %s", b.text("#mcp-clients"))
	}

	// Removing the agent on its page ends the client's session on its next
	// call, though the portal had its tool list cached.
	ts, err := handler.TokenSource(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	b.navigate(st.url("/orgs/" + org + "/agents/cimd-agent/delete"))
	b.click("#confirm")
	if body := b.text("body"); !strings.Contains(body, "Removed agent cimd-agent") || strings.Contains(body, "CIMD Test Client") {
		t.Errorf("after removing the agent, the agents page says: %s", body)
	}
	if status, _ := mcpPost(t, st.url("/mcp/"+org), tok.AccessToken); status != http.StatusUnauthorized {
		t.Errorf("a revoked agent's client answered %d on its next call, want 401", status)
	}
	if c := findCanary(consentHTML + string(out)); c != "" {
		t.Fatalf("a canary reached the client or the page: %s", c)
	}
}

// canaryKey stores an API key credential holding the canary, for the test.
func canaryKey(t *testing.T, cred string) {
	t.Helper()
	root := st.root()
	if _, err := root.Logical().Write("orgs/"+org+"/creds/"+cred, map[string]any{
		"type": "api_key", "service": "stripe", "api_key": canaryAPIKey, "description": "MCP sign-in test key",
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = root.Logical().Delete("orgs/" + org + "/creds/" + cred) })
}

// approveByPerson is an MCP client's side of the consent: a loopback
// redirect, and a code fetcher that opens the authorization URL in the
// signed-in browser, records the consent page into *html, names a new agent,
// ticks cred and presses Approve.
func approveByPerson(t *testing.T, b *tab, agent, cred string) (redirect string, fetch func(html *string) func(context.Context, *auth.AuthorizationArgs) (*auth.AuthorizationResult, error)) {
	t.Helper()
	results := make(chan *auth.AuthorizationResult, 1)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		results <- &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}
		_, _ = io.WriteString(w, "signed in; you may close this tab")
	}))
	t.Cleanup(cb.Close)
	return cb.URL + "/callback", func(html *string) func(context.Context, *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
		return func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
			b.navigate(args.URL)
			*html = b.html()
			b.do(chromedp.SendKeys(chromedp.ID("new-agent"), agent),
				chromedp.Click(chromedp.CSS(`input[name="credential"][value="`+cred+`"]`)))
			b.click("#approve")
			select {
			case res := <-results:
				return res, nil
			case <-time.After(30 * time.Second):
				return nil, fmt.Errorf("the redirect never came back; the page says: %s\nportal log: %s", b.text("main"), st.logs.tail(3000))
			}
		}
	}
}

// mcpPost sends one initialize request with token and answers the status
// and WWW-Authenticate.
func mcpPost(t *testing.T, u, token string) (int, string) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

// refresh redeems rt at the token endpoint, wants status, and answers the
// new refresh token.
func refresh(t *testing.T, rt string, want int) string {
	t.Helper()
	resp, err := http.PostForm(st.url("/oauth/token"), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientIDOf(t, rt)}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != want {
		t.Fatalf("refresh answered %d (%v), want %d", resp.StatusCode, out, want)
	}
	s, _ := out["refresh_token"].(string)
	return s
}

// clientIDOf reads the grant's client ID from the engine, as an operator
// would: the test's client registered it through the SDK.
func clientIDOf(t *testing.T, rt string) string {
	t.Helper()
	parts := strings.SplitN(rt, ".", 3)
	sec, err := st.root().Logical().Read("orgs/" + parts[0] + "/mcp/grants/" + parts[1])
	if err != nil || sec == nil {
		t.Fatalf("reading the grant: %v", err)
	}
	return sec.Data["client_id"].(string)
}

func deleteAgentIfAny(name string) error {
	return provision.DeleteAgent(context.Background(), st.root(), org, name)
}
