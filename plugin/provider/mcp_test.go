package provider

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clankteam/credentials/testing/oauthserver"
	"github.com/clankteam/credentials/testing/remotemcp"
)

func noRedirects() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TestRemoteMCPServerAuthorization: from a remote MCP server's URL alone,
// discovery finds its authorization server (the fosite test server) through
// its 401 and RFC 9728 metadata, a client is registered by RFC 7591, and
// the code exchange and the refresh both carry the server's resource
// (RFC 8707); the token then opens the MCP server.
func TestRemoteMCPServerAuthorization(t *testing.T) {
	as, remote := remotemcp.StartForTest(t, oauthserver.Options{})
	h := New(noRedirects(), 10*time.Second)
	ctx := context.Background()

	d, pe := h.DiscoverMCP(ctx, remote.MCPURL())
	if pe != nil {
		t.Fatal(pe)
	}
	if d.Resource != remote.MCPURL() || d.Auth.Issuer != as.Issuer() || d.Auth.TokenURL != as.TokenURL() || d.RegistrationURL != as.RegisterURL() || !d.Auth.S256 {
		t.Fatalf("discovered %+v", d)
	}
	spec := &Spec{Resource: d.Resource}
	d.Auth.Fill(spec)
	reg, pe := h.Register(ctx, d.RegistrationURL, "Credentials test", testRedirect, spec.TokenAuthMethod)
	if pe != nil {
		t.Fatal(pe)
	}
	if reg.ClientID == "" || reg.ClientSecret == "" || as.Registrations() != 1 {
		t.Fatalf("registration %q (secret %t), %d registered", reg.ClientID, reg.ClientSecret != "", as.Registrations())
	}
	app := App{ClientID: reg.ClientID, ClientSecret: reg.ClientSecret}

	verifier := "verifier-0123456789-0123456789-0123456789-remote"
	u := h.AuthCodeURL(spec, app, AuthRequest{RedirectURL: testRedirect, State: "state-0123456789", Verifier: verifier})
	if !strings.Contains(u, "resource=") {
		t.Fatalf("the authorize URL has no resource: %s", u)
	}
	q := code(t, u)
	tok, pe := h.Exchange(ctx, spec, app, testRedirect, q.Get("code"), verifier)
	if pe != nil {
		t.Fatal(pe)
	}
	next, pe := h.Refresh(ctx, spec, app, tok.RefreshToken)
	if pe != nil {
		t.Fatal(pe)
	}
	if got := as.Resources(); len(got) != 3 || got[0] != remote.MCPURL() || got[1] != remote.MCPURL() || got[2] != remote.MCPURL() {
		t.Fatalf("the authorization and token requests' resources are %q, want the MCP server's on all three", got)
	}
	for token, want := range map[string]int{next.AccessToken: http.StatusOK, "": http.StatusUnauthorized} {
		if got := initialize(t, remote.MCPURL(), token); got != want {
			t.Errorf("initialize with token %t answered %d, want %d", token != "", got, want)
		}
	}
}

func initialize(t *testing.T, u, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRemoteMCPDiscoveryRefusals: what the MCP authorization spec says a
// client must not go on with is refused with a reason.
func TestRemoteMCPDiscoveryRefusals(t *testing.T) {
	var base string
	mux := http.NewServeMux()
	meta := func(path string, v func() any) {
		mux.HandleFunc(path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v())
		})
	}
	// /plain has PKCE with plain only; /other's metadata names another
	// resource; /bare has no metadata at all.
	meta("/.well-known/oauth-protected-resource/plain", func() any {
		return map[string]any{"resource": base + "/plain", "authorization_servers": []string{base + "/as"}}
	})
	meta("/.well-known/oauth-authorization-server/as", func() any {
		return map[string]any{"issuer": base + "/as", "authorization_endpoint": base + "/as/authorize", "token_endpoint": base + "/as/token",
			"code_challenge_methods_supported": []string{"plain"}}
	})
	meta("/.well-known/oauth-protected-resource/other", func() any {
		return map[string]any{"resource": "https://elsewhere.example/mcp", "authorization_servers": []string{base + "/as"}}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	base = srv.URL
	h := New(noRedirects(), 5*time.Second)
	for path, want := range map[string]string{
		"/plain":    "does not offer PKCE with S256",
		"/other":    "protected-resource metadata",
		"/bare":     "protected-resource metadata",
		"not a url": "not an http(s) URL",
	} {
		u := base + path
		if path == "not a url" {
			u = "ftp://x"
		}
		_, pe := h.DiscoverMCP(context.Background(), u)
		if pe == nil || pe.Kind != Refused || !strings.Contains(pe.Msg, want) {
			t.Errorf("%s: %v, want a refusal saying %q", path, pe, want)
		}
	}
}

// TestRemoteMCPDiscoveryWhereTheSpecSays: the 401 answers a POSTed
// initialize (a server that takes messages by POST only still names its
// metadata), its scope comes before the metadata's scopes_supported,
// metadata at the root names the origin as the resource (RFC 9728 section
// 3.3), and an authorization server that takes public clients only gets
// none as the token endpoint auth method.
func TestRemoteMCPDiscoveryWhereTheSpecSays(t *testing.T) {
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		base := "http://" + r.Host
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": base, "authorization_endpoint": base + "/authorize", "token_endpoint": base + "/token",
			"response_types_supported": []string{"code"}, "code_challenge_methods_supported": []string{"S256"},
			"token_endpoint_auth_methods_supported": []string{"none"},
		})
	}))
	defer as.Close()
	server := func(challenge string, prm map[string]string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/mcp" {
				if r.Method != http.MethodPost {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("WWW-Authenticate", strings.ReplaceAll(challenge, "BASE", "http://"+r.Host))
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			resource, ok := prm[r.URL.Path]
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{
				"resource": strings.ReplaceAll(resource, "BASE", "http://"+r.Host), "authorization_servers": []string{as.URL},
				"scopes_supported": []string{"listed"},
			})
		}))
	}
	h := New(noRedirects(), 10*time.Second)
	cases := map[string]struct {
		challenge string
		prm       map[string]string
		resource  string
		scopes    string
	}{
		"named by the 401, with its scope": {`Bearer resource_metadata="BASE/custom/prm", scope="files:read files:write"`, map[string]string{"/custom/prm": "BASE/mcp"}, "/mcp", "files:read files:write"},
		"at the root":                      {`Bearer`, map[string]string{"/.well-known/oauth-protected-resource": "BASE"}, "", "listed"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			srv := server(c.challenge, c.prm)
			defer srv.Close()
			d, pe := h.DiscoverMCP(context.Background(), srv.URL+"/mcp")
			if pe != nil {
				t.Fatal(pe)
			}
			if d.Resource != srv.URL+c.resource || strings.Join(d.Scopes, " ") != c.scopes {
				t.Fatalf("resource %q scopes %q, want %q and %q", d.Resource, d.Scopes, srv.URL+c.resource, c.scopes)
			}
			spec := &Spec{}
			d.Auth.Fill(spec)
			if spec.TokenAuthMethod != AuthNone {
				t.Fatalf("token_auth_method %q for a server taking only public clients, want none", spec.TokenAuthMethod)
			}
		})
	}
}
