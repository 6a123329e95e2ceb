package credentials

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/oauthserver"
)

const (
	testRedirectURL  = "http://127.0.0.1:9/oauth/callback" // never contacted
	testClientID     = "engine"
	testClientSecret = "CANARY-client-secret-5b6c7d8e"
)

// oauthFixture is a backend wired to a real authorization server through a
// custom service "idp" and an app "idp-app".
type oauthFixture struct {
	t     testing.TB
	b     *backend
	s     logical.Storage
	clock *testClock
	srv   *oauthserver.Server
}

// newOAuthFixture starts an authorization server with opts (auto-approving)
// and registers it as service idp with the given oauth flags.
func newOAuthFixture(t testing.TB, opts oauthserver.Options, flags map[string]interface{}) *oauthFixture {
	t.Helper()
	opts.AutoApprove = true
	opts.Clients = append(opts.Clients, oauthserver.Client{ID: testClientID, Secret: testClientSecret, RedirectURIs: []string{testRedirectURL}})
	srv, err := oauthserver.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	b, s, clock := getTestBackend(t)
	f := &oauthFixture{t: t, b: b, s: s, clock: clock, srv: srv}
	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"redirect_url": testRedirectURL}))
	f.writeService("idp", flags)
	mustOK(t, do(t, b, s, logical.CreateOperation, "apps/idp-app", map[string]interface{}{
		"service": "idp", "client_id": testClientID, "client_secret": testClientSecret,
	}))
	return f
}

// writeService registers srv as a custom oauth2 service; flags override
// or add to its oauth spec.
func (f *oauthFixture) writeService(name string, flags map[string]interface{}) {
	f.t.Helper()
	spec := map[string]interface{}{
		"auth_url":       f.srv.AuthURL(),
		"token_url":      f.srv.TokenURL(),
		"revoke_url":     f.srv.RevokeURL(),
		"revoke_style":   "rfc7009",
		"userinfo_url":   f.srv.UserinfoURL(),
		"pkce":           true,
		"default_scopes": []interface{}{"read", "write"},
	}
	for k, v := range flags {
		if v == nil {
			delete(spec, k)
		} else {
			spec[k] = v
		}
	}
	data := map[string]interface{}{"types": "oauth2", "base_urls": f.srv.URL(), "oauth": spec}
	if svc, _ := f.b.getService(context.Background(), f.s, name); svc != nil {
		// The grant's provider changes under it (the API refuses this to
		// org admins while apps or credentials use the service).
		rewriteServiceInUse(f.t, f.b, f.s, name, data)
		return
	}
	mustOK(f.t, do(f.t, f.b, f.s, logical.UpdateOperation, "services/"+name, data))
}

func (f *oauthFixture) createCred(name string) {
	f.t.Helper()
	mustOK(f.t, do(f.t, f.b, f.s, logical.CreateOperation, "creds/"+name, map[string]interface{}{
		"type": "oauth2", "service": "idp", "app": "idp-app",
	}))
}

// startConnect runs connect and returns its response data.
func (f *oauthFixture) startConnect(name string) map[string]interface{} {
	f.t.Helper()
	// As an admin: replacing a working grant is allowed.
	return mustOK(f.t, do(f.t, f.b, f.s, logical.UpdateOperation, "creds/"+name+"/connect", map[string]interface{}{"replace": true})).Data
}

// authorize follows auth_url at the provider (auto-approved) as a browser
// would and returns the redirect's query.
func (f *oauthFixture) authorize(authURL string) url.Values {
	f.t.Helper()
	client := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Get(authURL)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		f.t.Fatalf("authorization did not redirect: HTTP %d", resp.StatusCode)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != testRedirectURL {
		f.t.Fatalf("redirected to %s, want %s", got, testRedirectURL)
	}
	return loc.Query()
}

// connect creates (if needed) and connects credential name through the
// whole flow.
func (f *oauthFixture) connect(name string) {
	f.t.Helper()
	if c, _ := getCredential(context.Background(), f.s, name); c == nil {
		f.createCred(name)
	}
	start := f.startConnect(name)
	q := f.authorize(start["auth_url"].(string))
	mustOK(f.t, do(f.t, f.b, f.s, logical.UpdateOperation, "creds/"+name+"/callback", map[string]interface{}{
		"code": q.Get("code"), "state": q.Get("state"),
	}))
}

func (f *oauthFixture) cred(name string) *credential {
	f.t.Helper()
	c, err := getCredential(context.Background(), f.s, name)
	if err != nil || c == nil {
		f.t.Fatalf("reading %s: %v", name, err)
	}
	return c
}

func (f *oauthFixture) read(name string) map[string]interface{} {
	f.t.Helper()
	return mustOK(f.t, do(f.t, f.b, f.s, logical.ReadOperation, "creds/"+name, nil)).Data
}

// aboutAt says whether got is want within 2s: the test server computes
// expires_in from its own clock, so it may say 3599 for an hour.
func aboutAt(got, want time.Time) bool {
	d := got.Sub(want)
	return d > -2*time.Second && d < 2*time.Second
}

// wantError checks resp is an error response mentioning want.
func wantError(t testing.TB, resp *logical.Response, want string) {
	t.Helper()
	if resp == nil || !resp.IsError() {
		t.Fatalf("want an error mentioning %q, got %v", want, resp)
	}
	if msg := resp.Error().Error(); !strings.Contains(msg, want) {
		t.Fatalf("error %q does not mention %q", msg, want)
	}
}

func TestConnectAndCallbackStoreTheGrant(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, map[string]interface{}{
		"auth_params": map[string]interface{}{"access_type": "offline", "prompt": "consent"},
	})
	f.createCred("gmail")
	start := f.startConnect("gmail")

	u, err := url.Parse(start["auth_url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	checks := map[string]string{
		"redirect_uri":          testRedirectURL,
		"client_id":             testClientID,
		"response_type":         "code",
		"code_challenge_method": "S256",
		"state":                 start["state"].(string),
		"scope":                 "read write",
		"access_type":           "offline",
		"prompt":                "consent",
	}
	for k, want := range checks {
		if got := q.Get(k); got != want {
			t.Errorf("auth_url %s = %q, want %q", k, got, want)
		}
	}
	if len(q.Get("code_challenge")) < 43 {
		t.Errorf("auth_url has no S256 code_challenge")
	}
	if want := formatTime(f.clock.now().Add(connectTTL)); start["expires_at"] != want {
		t.Errorf("expires_at = %v, want %s", start["expires_at"], want)
	}
	// The verifier stays server side: it is not in anything returned.
	p, _ := getPendingConnect(context.Background(), f.s, "gmail")
	if p == nil || p.Verifier == "" || strings.Contains(start["auth_url"].(string), p.Verifier) {
		t.Fatalf("verifier not kept server side")
	}

	back := f.authorize(start["auth_url"].(string))
	resp := mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/gmail/callback", map[string]interface{}{
		"code": back.Get("code"), "state": back.Get("state"),
	}))
	if resp.Data["status"] != statusActive || resp.Data["connected"] != true {
		t.Fatalf("after callback: status %v, connected %v", resp.Data["status"], resp.Data["connected"])
	}
	if resp.Data["account"] != "agent-owner@example.test" {
		t.Errorf("account = %v, want the provider's user", resp.Data["account"])
	}
	if got := strings.Join(resp.Data["scopes"].([]string), " "); got != "read write" {
		t.Errorf("scopes = %q", got)
	}
	if got, _ := time.Parse(time.RFC3339, resp.Data["token_expires_at"].(string)); !aboutAt(got, f.clock.now().Add(time.Hour)) {
		t.Errorf("token_expires_at = %v, want an hour from now", resp.Data["token_expires_at"])
	}
	c := f.cred("gmail")
	if !f.srv.Introspect(c.OAuth.AccessToken) || !f.srv.Introspect(c.OAuth.RefreshToken) {
		t.Fatalf("stored tokens are not active at the provider")
	}
	if c.OAuth.RefreshDue.IsZero() {
		t.Errorf("the grant was not filed for a scheduled refresh")
	}
	tok, err := f.b.oauthAccessToken(context.Background(), f.s, "gmail")
	if err != nil || tok != c.OAuth.AccessToken {
		t.Fatalf("oauthAccessToken after connect: %v", err)
	}
	if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken); n != 0 {
		t.Errorf("a fresh token was refreshed %d times", n)
	}
}

func TestConnectRefusals(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	mustOK(t, do(t, f.b, f.s, logical.CreateOperation, "creds/key", map[string]interface{}{
		"type": "api_key", "service": "stripe", "api_key": "sk_test_0123456789abcdef",
	}))
	wantError(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/key/connect", nil), "only oauth2 credentials connect")
	wantError(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/nope/connect", nil), "does not exist")
	wantError(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/key/disconnect", nil), "only oauth2")
	wantError(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/key/refresh", nil), "only oauth2")

	f.createCred("fresh")
	wantError(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/fresh/refresh", nil), "not connected")
	mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "config", map[string]interface{}{"redirect_url": ""}))
	wantError(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/fresh/connect", nil), "redirect_url is not configured")
}

// TestCallbackRefusals: each refused callback says why, stores no grant and
// never reaches the token endpoint.
func TestCallbackRefusals(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(f *oauthFixture) map[string]interface{} // the callback's data
		want    string
	}{
		{"no connect pending", func(f *oauthFixture) map[string]interface{} {
			return map[string]interface{}{"code": "x", "state": "y"}
		}, "no connect is pending"},
		{"wrong state", func(f *oauthFixture) map[string]interface{} {
			q := f.authorize(f.startConnect("c")["auth_url"].(string))
			return map[string]interface{}{"code": q.Get("code"), "state": "forged-" + q.Get("state")}
		}, "state does not match"},
		{"state of a replaced connect", func(f *oauthFixture) map[string]interface{} {
			q := f.authorize(f.startConnect("c")["auth_url"].(string))
			f.startConnect("c")
			return map[string]interface{}{"code": q.Get("code"), "state": q.Get("state")}
		}, "state does not match"},
		{"expired state", func(f *oauthFixture) map[string]interface{} {
			q := f.authorize(f.startConnect("c")["auth_url"].(string))
			f.clock.advance(connectTTL + time.Second)
			return map[string]interface{}{"code": q.Get("code"), "state": q.Get("state")}
		}, "expired"},
		{"missing PKCE verifier", func(f *oauthFixture) map[string]interface{} {
			q := f.authorize(f.startConnect("c")["auth_url"].(string))
			p, _ := getPendingConnect(context.Background(), f.s, "c")
			p.Verifier = ""
			if err := putPendingConnect(context.Background(), f.s, "c", p); err != nil {
				f.t.Fatal(err)
			}
			return map[string]interface{}{"code": q.Get("code"), "state": q.Get("state")}
		}, "no PKCE verifier"},
		{"provider refused", func(f *oauthFixture) map[string]interface{} {
			q := f.authorize(f.startConnect("c")["auth_url"].(string))
			return map[string]interface{}{"state": q.Get("state"), "error": "access_denied", "error_description": "The resource owner denied the request."}
		}, "did not grant access: access_denied"},
		{"no state", func(f *oauthFixture) map[string]interface{} {
			f.startConnect("c")
			return map[string]interface{}{"code": "x"}
		}, "state is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newOAuthFixture(t, oauthserver.Options{}, nil)
			f.createCred("c")
			data := tc.prepare(f)
			before := f.cred("c")
			wantError(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/c/callback", data), tc.want)
			after := f.cred("c")
			if after.OAuth.Connected() || after.Revision != before.Revision {
				t.Fatalf("a refused callback changed the credential")
			}
			if n := f.srv.TokenCalls(); n != 0 {
				t.Fatalf("a refused callback reached the token endpoint %d times", n)
			}
		})
	}
}

func TestReplayedCallbackRefused(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.createCred("c")
	q := f.authorize(f.startConnect("c")["auth_url"].(string))
	data := map[string]interface{}{"code": q.Get("code"), "state": q.Get("state")}
	mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/c/callback", data))
	first := f.cred("c")
	calls := f.srv.TokenCalls()

	wantError(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/c/callback", data), "already used")
	again := f.cred("c")
	if again.Revision != first.Revision || again.OAuth.AccessToken != first.OAuth.AccessToken {
		t.Fatalf("a replayed callback changed the credential")
	}
	if f.srv.TokenCalls() != calls {
		t.Fatalf("a replayed callback reached the token endpoint")
	}
}

func TestRefreshPathAndImport(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.connect("c")
	old := f.cred("c").OAuth
	f.clock.advance(5 * time.Minute)
	resp := mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/c/refresh", nil))
	if got, _ := time.Parse(time.RFC3339, resp.Data["token_expires_at"].(string)); !aboutAt(got, f.clock.now().Add(time.Hour)) {
		t.Errorf("token_expires_at after refresh = %v, want an hour from now", resp.Data["token_expires_at"])
	}
	g := f.cred("c").OAuth
	if g.AccessToken == old.AccessToken || g.RefreshToken == old.RefreshToken || !f.srv.Introspect(g.RefreshToken) {
		t.Fatalf("refresh did not store the rotated grant")
	}

	// Import: a refresh token obtained elsewhere is validated by one
	// refresh; the grant that refresh gives is stored.
	mustOK(t, do(t, f.b, f.s, logical.DeleteOperation, "creds/c", nil))
	f.connect("other")
	imported := f.cred("other").OAuth.RefreshToken
	calls := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken)
	resp = mustOK(t, do(t, f.b, f.s, logical.CreateOperation, "creds/imported", map[string]interface{}{
		"type": "oauth2", "service": "idp", "app": "idp-app", "refresh_token": imported,
	}))
	if resp.Data["connected"] != true || resp.Data["account"] != "agent-owner@example.test" || resp.Data["status"] != statusActive {
		t.Fatalf("import: %v", resp.Data)
	}
	if f.srv.TokenCallsFor(oauthserver.GrantRefreshToken) != calls+1 {
		t.Fatalf("import did not validate with exactly one refresh")
	}
	ig := f.cred("imported").OAuth
	if !f.srv.Introspect(ig.RefreshToken) || !f.srv.Introspect(ig.AccessToken) || ig.RefreshDue.IsZero() {
		t.Fatalf("import did not store a working, filed grant")
	}

	// A refresh token the provider refuses is not stored.
	resp = do(t, f.b, f.s, logical.CreateOperation, "creds/bad", map[string]interface{}{
		"type": "oauth2", "service": "idp", "app": "idp-app", "refresh_token": "not-a-refresh-token",
	})
	wantError(t, resp, "refresh token was refused")
	wantError(t, resp, "invalid_grant")
	if c, _ := getCredential(context.Background(), f.s, "bad"); c != nil {
		t.Fatalf("a refused import was stored")
	}
	// Nor when the provider is down: the message says to try again.
	f.srv.SetQuirks(oauthserver.Quirks{FailNextTokenCalls: 1})
	resp = do(t, f.b, f.s, logical.UpdateOperation, "creds/imported", map[string]interface{}{"refresh_token": ig.RefreshToken})
	wantError(t, resp, "try again")
	if got := f.cred("imported").OAuth; got.RefreshToken != ig.RefreshToken || got.AccessToken != ig.AccessToken {
		t.Fatalf("a failed import changed the stored grant")
	}
}

// TestDeleteLeavesNoOAuthStateBehind: deleting an oauth2 credential removes
// its pending connect and its entry in the refresh schedule, so a
// credential created again under the name starts clean: a connect started
// for the old one cannot complete on it.
func TestDeleteLeavesNoOAuthStateBehind(t *testing.T) {
	ctx := context.Background()
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.connect("c")
	// A second connect, approved at the provider but not completed.
	q := f.authorize(f.startConnect("c")["auth_url"].(string))
	if jobs, _ := dueEntries(ctx, f.s, "~"); len(jobs) != 1 {
		t.Fatalf("due index before the delete: %v", jobs)
	}

	mustOK(t, do(t, f.b, f.s, logical.DeleteOperation, "creds/c", nil))
	for _, prefix := range []string{pendingConnectPrefix, dueIndexPrefix} {
		keys, err := logical.CollectKeysWithPrefix(ctx, f.s, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 0 {
			t.Errorf("left behind after the delete: %v", keys)
		}
	}

	// Created again at the same instant, with the same app.
	f.createCred("c")
	calls := f.srv.TokenCalls()
	wantError(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/c/callback", map[string]interface{}{
		"code": q.Get("code"), "state": q.Get("state"),
	}), "no connect is pending")
	if f.cred("c").OAuth.Connected() || f.srv.TokenCalls() != calls {
		t.Fatalf("the old credential's connect completed on the new one")
	}
}

// refusingDelete refuses to delete one key.
type refusingDelete struct {
	logical.Storage
	key string
}

func (r refusingDelete) Delete(ctx context.Context, key string) error {
	if key == r.key {
		return errors.New("injected storage failure")
	}
	return r.Storage.Delete(ctx, key)
}

// TestFailedDeleteKeepsTheGrantScheduled: when storage refuses to delete
// the credential after its schedule entry is gone, the delete fails, and
// the next tick files the credential again.
func TestFailedDeleteKeepsTheGrantScheduled(t *testing.T) {
	ctx := context.Background()
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.connect("c")
	if err := f.b.refreshDue(ctx, f.s); err != nil { // the first tick's sweep is done
		t.Fatal(err)
	}
	refusing := refusingDelete{Storage: f.s, key: credStorageKey("c")}
	if _, err := doErr(f.b, refusing, logical.DeleteOperation, "creds/c", nil); err == nil {
		t.Fatal("the delete succeeded although storage refused it")
	}
	if jobs, _ := dueEntries(ctx, f.s, "~"); len(jobs) != 0 {
		t.Fatalf("due index after the failed delete: %v", jobs)
	}
	if err := f.b.refreshDue(ctx, f.s); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := dueEntries(ctx, f.s, "~"); len(jobs) != 1 || jobs[0].bucket != dueBucket(f.cred("c").OAuth.RefreshDue) {
		t.Fatalf("the credential was not filed again: %v", jobs)
	}
}

// TestReconnectRevokesTheGrantItReplaces: a reconnect needs replace=true
// while the credential works, and the grant it replaces is revoked at the
// provider, with the receipt in the answer: the old refresh token gets no
// more tokens.
func TestReconnectRevokesTheGrantItReplaces(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.connect("c")
	old := f.cred("c").OAuth

	resp, err := doErr(f.b, f.s, logical.UpdateOperation, "creds/c/connect", nil)
	if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "pass replace=true") {
		t.Fatalf("reconnecting a working credential without replace: %v %v", resp, err)
	}

	start := f.startConnect("c")
	q := f.authorize(start["auth_url"].(string))
	resp = mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/c/callback", map[string]interface{}{"code": q.Get("code"), "state": q.Get("state")}))
	receipt, _ := resp.Data["replaced_grant"].(map[string]interface{})
	if revoked := fmt.Sprint(receipt["revoked"]); !strings.Contains(revoked, "refresh_token") {
		t.Fatalf("receipt of the replaced grant: %v", receipt)
	}
	if !f.srv.IsRevoked(old.RefreshToken) {
		t.Fatal("the replaced refresh token is still live at the provider")
	}
	if now := f.cred("c").OAuth; now.RefreshToken == old.RefreshToken || f.srv.IsRevoked(now.RefreshToken) {
		t.Fatal("the new grant is not the one stored, or was revoked")
	}
	for _, secret := range []string{old.RefreshToken, old.AccessToken} {
		if strings.Contains(fmt.Sprint(resp.Data), secret) {
			t.Fatal("the answer holds a token")
		}
	}

	// A credential that needs attention is connected again without replace.
	c := f.cred("c")
	c.State, c.StateReason = statusNeedsAttention, "refresh failing: test"
	if err := f.b.saveCredential(context.Background(), f.s, c); err != nil {
		t.Fatal(err)
	}
	mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/c/connect", nil))
}
