package credentials

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/testing/oauthserver"
	"github.com/clankteam/credentials/testing/remotemcp"
)

// remoteToolFixture is a credential connected, through the whole MCP OAuth
// client flow, to a remote MCP server protected by the fosite test server,
// in a backend with an edge key.
type remoteToolFixture struct {
	*mcpFixture
	as     *oauthserver.Server
	remote *remotemcp.Server
}

func newRemoteToolFixture(t *testing.T) *remoteToolFixture {
	f := &remoteToolFixture{mcpFixture: newMCPFixture(t)}
	as, remote := remotemcp.StartForTest(t, oauthserver.Options{AutoApprove: true, IssInCallback: true})
	f.as, f.remote = as, remote
	b, s := f.b, f.s
	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"redirect_url": testRedirectURL}))
	mustOK(t, do(t, b, s, logical.CreateOperation, "services/remote", map[string]interface{}{"types": "oauth2", "mcp_url": remote.MCPURL()}))
	mustOK(t, do(t, b, s, logical.CreateOperation, "apps/remote-app", map[string]interface{}{"service": "remote", "register": true}))
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/tracker", map[string]interface{}{"type": "oauth2", "service": "remote", "app": "remote-app"}))
	start := mustOK(t, do(t, b, s, logical.UpdateOperation, "creds/tracker/connect", nil)).Data
	q := (&oauthFixture{t: t, b: b, s: s, srv: as}).authorize(start["auth_url"].(string))
	mustOK(t, do(t, b, s, logical.UpdateOperation, "creds/tracker/callback", map[string]interface{}{
		"code": q.Get("code"), "state": q.Get("state"), "iss": q.Get("iss"),
	}))
	return f
}

// toolInjection asks for the sealed injection of a tool call and opens it
// as the edge does.
func (f *remoteToolFixture) toolInjection(path string, extra map[string]interface{}) *egress.EdgeInjection {
	f.t.Helper()
	data := map[string]interface{}{"edge_key": f.edge.ID}
	for k, v := range extra {
		data[k] = v
	}
	out := mustOK(f.t, do(f.t, f.b, f.s, logical.UpdateOperation, path, data)).Data
	plain, err := f.edge.OpenRaw("", "tracker", out[egress.FieldSealed].(string))
	if err != nil {
		f.t.Fatal(err)
	}
	inj, err := egress.ParseInjection(plain, "tracker")
	if err != nil {
		f.t.Fatal(err)
	}
	return inj
}

// TestRemoteMCPToolPaths: proxy/<cred>/TOOL[/<tool>] answers the edge the
// injection for the service's remote MCP server, whose token was bound to
// that server (RFC 8707) by every request of the flow; a refusal by the
// server is answered with one refresh, shared and not repeated at once.
func TestRemoteMCPToolPaths(t *testing.T) {
	f := newRemoteToolFixture(t)
	b, s := f.b, f.s

	inj := f.toolInjection("proxy/tracker/TOOL/create_issue", nil)
	if inj.Service.BaseURLs[0] != f.remote.MCPURL() || !f.as.Introspect(string(inj.Material.Secret)) {
		t.Fatalf("the injection is not the remote server's live token: base %v", inj.Service.BaseURLs)
	}
	for _, r := range f.as.Resources() {
		if r != f.remote.MCPURL() {
			t.Fatalf("a request of the flow named resource %q, want %q", r, f.remote.MCPURL())
		}
	}
	if len(f.as.Resources()) < 2 {
		t.Fatalf("resource sent on %d requests, want the authorization and token requests", len(f.as.Resources()))
	}
	f.toolInjection("proxy/tracker/TOOL", nil) // listing

	for _, tc := range []struct {
		desc, path string
		data       map[string]interface{}
		want       string
	}{
		{"without edge_key", "proxy/tracker/TOOL/create_issue", nil, "portal's MCP server"},
		{"bad tool name", "proxy/tracker/TOOL/create%20issue", map[string]interface{}{"edge_key": f.edge.ID}, "tool name"},
		{"nested tool path", "proxy/tracker/TOOL/a/b", map[string]interface{}{"edge_key": f.edge.ID}, "tool name"},
	} {
		resp := do(t, b, s, logical.UpdateOperation, tc.path, tc.data)
		if !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want) {
			t.Errorf("%s: %v, want a 400 saying %q", tc.desc, resp, tc.want)
		}
	}
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/plain-key", map[string]interface{}{"type": "api_key", "service": "openai", "api_key": "sk-test-plain"}))
	if resp := do(t, b, s, logical.UpdateOperation, "proxy/plain-key/TOOL/x", map[string]interface{}{"edge_key": f.edge.ID}); !resp.IsError() || !strings.Contains(resp.Error().Error(), "no remote MCP server") {
		t.Errorf("TOOL on a service without mcp_url: %v", resp)
	}

	// The server refuses the token: one refresh, and a new token.
	before := f.as.TokenCallsFor("refresh_token")
	f.clock.advance(refusedGrace + time.Second)
	fresh := f.toolInjection("proxy/tracker/TOOL/create_issue", map[string]interface{}{"upstream_refused": true})
	if got := f.as.TokenCallsFor("refresh_token"); got != before+1 {
		t.Fatalf("refresh calls %d -> %d, want one refresh", before, got)
	}
	if string(fresh.Material.Secret) == string(inj.Material.Secret) || !f.as.Introspect(string(fresh.Material.Secret)) {
		t.Fatal("the refusal did not bring a new live token")
	}
	// Told again at once (another caller refused the old token): no
	// second refresh.
	f.toolInjection("proxy/tracker/TOOL/create_issue", map[string]interface{}{"upstream_refused": true})
	if got := f.as.TokenCallsFor("refresh_token"); got != before+1 {
		t.Fatalf("a second refusal within %s refreshed again (%d calls)", refusedGrace, got-before)
	}
}

// TestRemoteMCPAppByClientMetadataDocument: where the remote server's
// authorization server takes client ID metadata documents and the org has
// set the portal's, register=true makes the app that document's public
// client, registers nothing, and the flow and refresh run with it; without
// client_metadata_url the same app is registered by RFC 7591.
func TestRemoteMCPAppByClientMetadataDocument(t *testing.T) {
	f := newMCPFixture(t)
	b, s := f.b, f.s
	as, remote := remotemcp.StartForTest(t, oauthserver.Options{AutoApprove: true, IssInCallback: true, CIMD: true})
	var docURL string
	doc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"client_id": docURL, "client_name": "Credentials broker",
			"redirect_uris": []string{testRedirectURL}, "token_endpoint_auth_method": "none"})
	}))
	t.Cleanup(doc.Close)
	docURL = doc.URL + "/oauth/client.json"

	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"redirect_url": testRedirectURL}))
	mustOK(t, do(t, b, s, logical.CreateOperation, "services/remote", map[string]interface{}{"types": "oauth2", "mcp_url": remote.MCPURL()}))
	o := mustOK(t, do(t, b, s, logical.ReadOperation, "services/remote", nil)).Data["oauth"].(map[string]interface{})
	if o["client_id_metadata_document_supported"] != true {
		t.Fatalf("discovery did not keep CIMD support: %v", o)
	}
	// Without the portal's document the app is registered.
	mustOK(t, do(t, b, s, logical.CreateOperation, "apps/dcr-app", map[string]interface{}{"service": "remote", "register": true}))
	if as.Registrations() != 1 {
		t.Fatalf("%d registrations, want 1", as.Registrations())
	}

	for _, bad := range []string{"http://portal.example/oauth/client.json", "https://portal.example", "https://portal.example/c.json?x=1", "not a url"} {
		resp := do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"client_metadata_url": bad})
		if !resp.IsError() || !strings.Contains(resp.Error().Error(), "client_metadata_url") {
			t.Errorf("client_metadata_url=%s: %v, want a 400 naming the field", bad, resp)
		}
	}
	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"client_metadata_url": docURL}))
	app := mustOK(t, do(t, b, s, logical.CreateOperation, "apps/remote-app", map[string]interface{}{"service": "remote", "register": true})).Data
	if app["client_id"] != docURL || app["public"] != true || app["client_secret_set"] != false || as.Registrations() != 1 {
		t.Fatalf("app %v after %d registrations: want the document's public client, nothing registered", app, as.Registrations())
	}

	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/tracker", map[string]interface{}{"type": "oauth2", "service": "remote", "app": "remote-app"}))
	start := mustOK(t, do(t, b, s, logical.UpdateOperation, "creds/tracker/connect", nil)).Data
	if !strings.Contains(start["auth_url"].(string), "client_id="+url.QueryEscape(docURL)) {
		t.Fatalf("auth_url %s does not name the document as client_id", start["auth_url"])
	}
	q := (&oauthFixture{t: t, b: b, s: s, srv: as}).authorize(start["auth_url"].(string))
	mustOK(t, do(t, b, s, logical.UpdateOperation, "creds/tracker/callback", map[string]interface{}{
		"code": q.Get("code"), "state": q.Get("state"), "iss": q.Get("iss"),
	}))
	if as.DocumentsFetched() == 0 {
		t.Fatal("the authorization server never read the document")
	}
	mustOK(t, do(t, b, s, logical.UpdateOperation, "creds/tracker/refresh", nil))
	if c := mustOK(t, do(t, b, s, logical.ReadOperation, "creds/tracker", nil)).Data; c["status"] != "active" {
		t.Fatalf("after connect and refresh: %v", c)
	}
}
