package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/oauthserver"
)

// tokenRecorder fronts a test authorization server's token endpoint and
// keeps the tokens it hands out. Vault never returns a token, so this is how
// the test can ask the provider afterwards whether the engine revoked them.
type tokenRecorder struct {
	*httptest.Server
	mu     sync.Mutex
	grants []recordedGrant
}

type recordedGrant struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

func newTokenRecorder(t *testing.T, idp *oauthserver.Server) *tokenRecorder {
	t.Helper()
	r := &tokenRecorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rec := httptest.NewRecorder()
		idp.Handler().ServeHTTP(rec, req)
		var g recordedGrant
		if rec.Code == http.StatusOK && json.Unmarshal(rec.Body.Bytes(), &g) == nil && g.AccessToken != "" {
			r.mu.Lock()
			r.grants = append(r.grants, g)
			r.mu.Unlock()
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(r.Close)
	return r
}

// all is every grant the token endpoint issued so far.
func (r *tokenRecorder) all() []recordedGrant {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedGrant(nil), r.grants...)
}

// authorizeAt follows a connect's auth_url at an auto-approving test
// provider, as the person's browser would, and returns the query of the
// provider's redirect back: the code and state for the callback.
func authorizeAt(t *testing.T, authURL string) url.Values {
	t.Helper()
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, err := resp.Location()
	if err != nil {
		t.Fatalf("the provider did not redirect back: HTTP %d", resp.StatusCode)
	}
	return back.Query()
}

func (r *tokenRecorder) last(t *testing.T) recordedGrant {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.grants) == 0 {
		t.Fatal("the token endpoint issued nothing")
	}
	return r.grants[len(r.grants)-1]
}

// TestOAuthLifecycleThroughVault connects a credential through the real
// Vault (connect, the provider's consent, callback), refreshes it and
// disconnects it, and asks the provider whether the grant was really
// revoked.
// Long on purpose: one story told in order, whose steps depend on the ones before.
func TestOAuthLifecycleThroughVault(t *testing.T) {
	ctx := context.Background()
	org := newOrg(t, "oauth-life")
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin)).Logical()
	member := vault.ClientWithToken(tokenFor(t, org, provision.RoleMember)).Logical()

	idp, err := oauthserver.Start(oauthserver.Options{AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	const redirect = "http://127.0.0.1:1/oauth/callback" // the portal's; never contacted here
	const clientSecret = "CANARY-oauth-life-client-secret"
	if err := idp.AddClient("engine", clientSecret, []string{redirect}, nil); err != nil {
		t.Fatal(err)
	}
	rec := newTokenRecorder(t, idp)

	write := func(path string, data map[string]interface{}) map[string]interface{} {
		t.Helper()
		s, err := admin.WriteWithContext(ctx, mount+"/"+path, data)
		if err != nil {
			t.Fatalf("writing %s: %v", path, err)
		}
		if s == nil {
			return nil
		}
		return s.Data
	}
	write("config", map[string]interface{}{"redirect_url": redirect})
	write("services/idp", map[string]interface{}{
		"types":     "oauth2",
		"base_urls": idp.URL(),
		"oauth": map[string]interface{}{
			"auth_url": idp.AuthURL(), "token_url": rec.URL + "/token",
			"revoke_url": idp.RevokeURL(), "revoke_style": "rfc7009",
			"userinfo_url": idp.UserinfoURL(), "pkce": true,
			"default_scopes": []string{"mail.read"},
		},
	})
	write("apps/idp-app", map[string]interface{}{"service": "idp", "client_id": "engine", "client_secret": clientSecret})
	write("creds/mail", map[string]interface{}{"type": "oauth2", "service": "idp", "app": "idp-app"})

	// A member connects, as the portal does with the person's own token.
	started, err := member.WriteWithContext(ctx, mount+"/creds/mail/connect", nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	authURL, _ := started.Data["auth_url"].(string)
	if !strings.HasPrefix(authURL, idp.AuthURL()+"?") || !strings.Contains(authURL, "code_challenge_method=S256") {
		t.Fatalf("auth_url %q is not a PKCE authorization request to the provider", authURL)
	}
	back := authorizeAt(t, authURL)
	if back.Get("state") != started.Data["state"] {
		t.Fatalf("the provider returned another state")
	}
	callback := map[string]interface{}{"code": back.Get("code"), "state": back.Get("state")}
	if _, err := member.WriteWithContext(ctx, mount+"/creds/mail/callback", callback); err != nil {
		t.Fatalf("callback: %v", err)
	}
	// A replayed callback is refused.
	_, err = member.WriteWithContext(ctx, mount+"/creds/mail/callback", callback)
	assertStatus(t, err, http.StatusBadRequest, "already used")

	cred, err := admin.ReadWithContext(ctx, mount+"/creds/mail")
	if err != nil {
		t.Fatal(err)
	}
	if cred.Data["status"] != "active" || cred.Data["connected"] != true || cred.Data["account"] != "agent-owner@example.test" {
		t.Fatalf("after connect: %v", cred.Data)
	}
	connected := rec.last(t)
	if !idp.Introspect(connected.AccessToken) || !idp.Introspect(connected.RefreshToken) {
		t.Fatal("the grant the engine received is not active at the provider")
	}

	// Refresh now: the provider rotates the refresh token.
	refreshed, err := admin.WriteWithContext(ctx, mount+"/creds/mail/refresh", nil)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if n := idp.TokenCallsFor(oauthserver.GrantRefreshToken); n != 1 {
		t.Fatalf("%d refresh calls at the provider, want 1", n)
	}
	rotated := rec.last(t)
	if rotated.RefreshToken == connected.RefreshToken || idp.Introspect(connected.RefreshToken) || !idp.Introspect(rotated.RefreshToken) {
		t.Fatal("the refresh did not rotate the grant")
	}
	if refreshed.Data["token_expires_at"] == "" || refreshed.Data["status"] != "active" {
		t.Fatalf("after refresh: %v", refreshed.Data)
	}

	// Members may connect but not disconnect.
	_, err = member.WriteWithContext(ctx, mount+"/creds/mail/disconnect", nil)
	assertStatus(t, err, http.StatusForbidden, "permission denied")

	out := write("creds/mail/disconnect", nil)
	receipt, _ := out["revocation"].(map[string]interface{})
	if got := fmt.Sprint(receipt["revoked"]); got != "[refresh_token access_token]" {
		t.Fatalf("revocation receipt %v", receipt)
	}
	if !idp.IsRevoked(rotated.RefreshToken) || !idp.IsRevoked(rotated.AccessToken) {
		t.Fatal("the receipt says revoked, the provider says the grant is alive")
	}
	cred, err = admin.ReadWithContext(ctx, mount+"/creds/mail")
	if err != nil {
		t.Fatal(err)
	}
	if cred.Data["status"] != "disconnected" || cred.Data["connected"] != false {
		t.Fatalf("after disconnect: %v", cred.Data)
	}
	// Nothing the engine answered or logged holds a token or the secret.
	serverLog, err := vault.ReadLog()
	if err != nil {
		t.Fatal(err)
	}
	outputs := [][]byte{serverLog}
	for _, data := range []map[string]interface{}{started.Data, cred.Data, refreshed.Data, out} {
		b, _ := json.Marshal(data)
		outputs = append(outputs, b)
	}
	for _, secret := range []string{connected.AccessToken, connected.RefreshToken, rotated.AccessToken, rotated.RefreshToken, clientSecret} {
		for _, o := range outputs {
			if strings.Contains(string(o), secret) {
				t.Fatal("a response or Vault's log holds a token or the client secret")
			}
		}
	}
}

// TestReconnectRulesAndRevocation: a member cannot replace a working grant
// (Vault's ACL denies replace), an admin can, and the grant replaced is
// revoked at the provider: after a reconnect and a delete, neither old
// refresh token gets a token from the provider.
func TestReconnectRulesAndRevocation(t *testing.T) {
	ctx := context.Background()
	org := newOrg(t, "oauth-replace")
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin)).Logical()
	member := vault.ClientWithToken(tokenFor(t, org, provision.RoleMember)).Logical()
	idp, err := oauthserver.Start(oauthserver.Options{AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	const redirect = "http://127.0.0.1:1/oauth/callback"
	if err := idp.AddClient("engine", "replace-secret", []string{redirect}, nil); err != nil {
		t.Fatal(err)
	}
	rec := newTokenRecorder(t, idp)
	for path, data := range map[string]map[string]interface{}{
		"config": {"redirect_url": redirect},
		"services/idp": {"types": "oauth2", "base_urls": idp.URL(), "oauth": map[string]interface{}{
			"auth_url": idp.AuthURL(), "token_url": rec.URL + "/token", "revoke_url": idp.RevokeURL(), "revoke_style": "rfc7009", "pkce": true}},
	} {
		if _, err := admin.WriteWithContext(ctx, mount+"/"+path, data); err != nil {
			t.Fatal(err)
		}
	}
	for path, data := range map[string]map[string]interface{}{
		"apps/idp-app": {"service": "idp", "client_id": "engine", "client_secret": "replace-secret"},
	} {
		if _, err := admin.WriteWithContext(ctx, mount+"/"+path, data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.WriteWithContext(ctx, mount+"/creds/mail", map[string]interface{}{"type": "oauth2", "service": "idp", "app": "idp-app"}); err != nil {
		t.Fatal(err)
	}
	connect := func(c *api.Logical, data map[string]interface{}) (map[string]interface{}, error) {
		started, err := c.WriteWithContext(ctx, mount+"/creds/mail/connect", data)
		if err != nil {
			return nil, err
		}
		back := authorizeAt(t, started.Data["auth_url"].(string))
		s, err := c.WriteWithContext(ctx, mount+"/creds/mail/callback", map[string]interface{}{"code": back.Get("code"), "state": back.Get("state")})
		if err != nil {
			return nil, err
		}
		return s.Data, nil
	}
	// A member connects a credential that is not connected yet.
	if _, err := connect(member, nil); err != nil {
		t.Fatal(err)
	}
	first := rec.last(t)
	// It works now: the member may not replace it, with or without replace.
	_, err = member.WriteWithContext(ctx, mount+"/creds/mail/connect", nil)
	assertStatus(t, err, http.StatusBadRequest, "replace=true")
	_, err = member.WriteWithContext(ctx, mount+"/creds/mail/connect", map[string]interface{}{"replace": true})
	assertStatus(t, err, http.StatusForbidden, "permission denied")

	// An admin replaces it; the old grant is revoked, with a receipt.
	out, err := connect(admin, map[string]interface{}{"replace": true})
	if err != nil {
		t.Fatal(err)
	}
	if receipt, _ := out["replaced_grant"].(map[string]interface{}); !strings.Contains(fmt.Sprint(receipt["revoked"]), "refresh_token") {
		t.Fatalf("replaced_grant: %v", out["replaced_grant"])
	}
	second := rec.last(t)
	if idp.Introspect(first.RefreshToken) {
		t.Fatal("the replaced refresh token is still active at the provider")
	}
	if _, err := admin.DeleteWithContext(ctx, mount+"/creds/mail"); err != nil {
		t.Fatal(err)
	}
	for _, rt := range []string{first.RefreshToken, second.RefreshToken} {
		if idp.Introspect(rt) {
			t.Fatal("a refresh token lives on after reconnect and delete")
		}
	}
}
