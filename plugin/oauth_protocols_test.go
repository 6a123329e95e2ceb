package credentials

import (
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/oauthserver"
)

// Providers no one here wrote: discovery instead of four URLs, clients
// that authenticate only with HTTP basic, public clients, RFC 9207's iss,
// and the account kept by its subject.

// callback completes a connect with the authorize redirect's query, with
// iss as given (empty: left out), and returns the answer.
func (f *oauthFixture) callback(name string, q map[string]string) *logical.Response {
	f.t.Helper()
	data := map[string]interface{}{}
	for k, v := range q {
		if v != "" {
			data[k] = v
		}
	}
	resp, err := doErr(f.b, f.s, logical.UpdateOperation, "creds/"+name+"/callback", data)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp
}

func TestDiscoveryFillsTheEndpoints(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.writeService("idp", map[string]interface{}{
		"auth_url": nil, "token_url": nil, "revoke_url": nil, "revoke_style": nil, "userinfo_url": nil, "pkce": nil,
		"discovery_url": f.srv.DiscoveryURL(),
	})
	svc, err := f.b.getService(t.Context(), f.s, "idp")
	if err != nil {
		t.Fatal(err)
	}
	o := svc.OAuth
	if o.AuthURL != f.srv.AuthURL() || o.TokenURL != f.srv.TokenURL() || o.RevokeURL != f.srv.RevokeURL() || o.RevokeStyle != revokeRFC7009 ||
		o.UserinfoURL != f.srv.UserinfoURL() || !o.PKCE || o.Issuer != f.srv.Issuer() {
		t.Fatalf("discovered spec: %+v", o)
	}
	f.connect("c")
	if g := f.cred("c").OAuth; g.AccessToken == "" || g.AccountID != "1001" || g.Account != "agent-owner@example.test" {
		t.Fatalf("grant after a discovered connect: account %q (%q)", g.Account, g.AccountID)
	}
	read := mustOK(t, do(t, f.b, f.s, logical.ReadOperation, "creds/c", nil)).Data
	if read["account_id"] != "1001" {
		t.Errorf("read account_id = %v, want the subject", read["account_id"])
	}

	// A document whose issuer is not where it was fetched from is refused.
	resp, _ := doErr(f.b, f.s, logical.UpdateOperation, "services/other", map[string]interface{}{
		"types": "oauth2", "oauth": map[string]interface{}{"discovery_url": f.srv.URL() + "/x/.well-known/openid-configuration"},
	})
	if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "discovery_url") {
		t.Fatalf("a discovery document at the wrong address: %v", resp)
	}
}

func TestBasicOnlyClientAuthentication(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, map[string]interface{}{"token_auth_method": "client_secret_basic"})
	if err := f.srv.Register(oauthserver.Client{ID: testClientID, Secret: testClientSecret, RedirectURIs: []string{testRedirectURL}, AuthMethod: "client_secret_basic"}); err != nil {
		t.Fatal(err)
	}
	f.connect("c")
	g := f.cred("c").OAuth
	mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/c/refresh", nil))
	if next := f.cred("c").OAuth; next.AccessToken == g.AccessToken {
		t.Fatal("refresh with basic auth gave no new token")
	}
	resp := mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/c/disconnect", nil))
	if r := resp.Data["revocation"]; r == nil || !strings.Contains(strings.Join(asStrings(r), ","), "refresh_token") {
		t.Fatalf("revocation with basic auth: %v", resp.Data)
	}
}

// asStrings reads a receipt's revoked list.
func asStrings(receipt interface{}) []string {
	m, _ := receipt.(map[string]interface{})
	list, _ := m["revoked"].([]string)
	return list
}

// TestPostOnlyIsTheDefault: without token_auth_method, the secret goes in
// the body, and a basic-only provider refuses it with a clear message.
func TestBasicOnlyProviderRefusesPost(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	if err := f.srv.Register(oauthserver.Client{ID: testClientID, Secret: testClientSecret, RedirectURIs: []string{testRedirectURL}, AuthMethod: "client_secret_basic"}); err != nil {
		t.Fatal(err)
	}
	f.createCred("c")
	q := f.authorize(f.startConnect("c")["auth_url"].(string))
	resp := f.callback("c", map[string]string{"code": q.Get("code"), "state": q.Get("state")})
	if !resp.IsError() || !strings.Contains(resp.Error().Error(), "invalid_client") {
		t.Fatalf("post to a basic-only provider: %v", resp)
	}
}

func TestPublicClient(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.writeService("idp", map[string]interface{}{"token_auth_method": "none"})
	if err := f.srv.AddPublicClient("public-app", []string{testRedirectURL}, nil); err != nil {
		t.Fatal(err)
	}
	resp, _ := doErr(f.b, f.s, logical.CreateOperation, "apps/pub", map[string]interface{}{"service": "idp", "client_id": "public-app", "client_secret": "x"})
	if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "public") {
		t.Fatalf("a secret for a public client: %v", resp)
	}
	mustOK(t, do(t, f.b, f.s, logical.CreateOperation, "apps/pub", map[string]interface{}{"service": "idp", "client_id": "public-app"}))
	mustOK(t, do(t, f.b, f.s, logical.CreateOperation, "creds/c", map[string]interface{}{"type": "oauth2", "service": "idp", "app": "pub"}))
	f.connect("c")
	if g := f.cred("c").OAuth; g.AccessToken == "" || g.RefreshToken == "" {
		t.Fatal("no grant for the public client")
	}
	mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/c/refresh", nil))

	// Without PKCE a public client is refused.
	resp, _ = doErr(f.b, f.s, logical.UpdateOperation, "services/nopkce", map[string]interface{}{
		"types": "oauth2", "oauth": map[string]interface{}{"auth_url": f.srv.AuthURL(), "token_url": f.srv.TokenURL(), "token_auth_method": "none"},
	})
	if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "needs pkce") {
		t.Fatalf("a public client without PKCE: %v", resp)
	}
}

func TestIssInTheCallback(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{IssInCallback: true}, nil)
	f.writeService("idp", map[string]interface{}{"discovery_url": f.srv.DiscoveryURL()})
	svc, _ := f.b.getService(t.Context(), f.s, "idp")
	if !svc.OAuth.IssRequired || svc.OAuth.Issuer != f.srv.Issuer() {
		t.Fatalf("discovery did not record the issuer and its iss: %+v", svc.OAuth)
	}
	f.createCred("c")
	for _, tc := range []struct {
		name, iss, want string
	}{
		{"another provider's iss", "https://evil.example", "mix-up"},
		{"no iss", "", "has no iss"},
		{"the provider's iss", f.srv.Issuer(), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := f.authorize(f.startConnect("c")["auth_url"].(string))
			if q.Get("iss") != f.srv.Issuer() {
				t.Fatalf("the server sent iss %q", q.Get("iss"))
			}
			resp := f.callback("c", map[string]string{"code": q.Get("code"), "state": q.Get("state"), "iss": tc.iss})
			switch {
			case tc.want == "" && resp.IsError():
				t.Fatalf("refused: %v", resp.Error())
			case tc.want != "" && (!resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want)):
				t.Fatalf("got %v, want a refusal with %q", resp, tc.want)
			}
		})
	}
	if f.cred("c").OAuth.AccessToken == "" {
		t.Fatal("no grant after the right iss")
	}
}
