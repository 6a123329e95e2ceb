package credentials

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/plugin/provider"
	"github.com/clankteam/credentials/testing/oauthserver"
)

// fakeProviderFixture is a backend whose provider is provider.Fake: the
// engine's lifecycle, with the protocol out of the way.
type fakeProviderFixture struct {
	t     *testing.T
	b     *backend
	s     logical.Storage
	clock *testClock
	idp   *provider.Fake
}

func newFakeProviderFixture(t *testing.T, lifetime int64) *fakeProviderFixture {
	t.Helper()
	b, s, clock := getTestBackend(t)
	idp := provider.NewFake()
	idp.Lifetime, idp.Rotate = lifetime, true
	b.oauth.provider = idp
	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"redirect_url": testRedirectURL}))
	mustOK(t, do(t, b, s, logical.UpdateOperation, "services/fakeidp", map[string]interface{}{
		"types": "oauth2", "base_urls": "https://api.fake.example",
		"oauth": map[string]interface{}{"auth_url": "https://fake.example/authorize", "token_url": "https://fake.example/token", "revoke_url": "https://fake.example/revoke", "revoke_style": "rfc7009", "pkce": true},
	}))
	mustOK(t, do(t, b, s, logical.CreateOperation, "apps/fake-app", map[string]interface{}{"service": "fakeidp", "client_id": "c", "client_secret": "s"}))
	return &fakeProviderFixture{t: t, b: b, s: s, clock: clock, idp: idp}
}

// connect creates (if needed) and connects name through the fake.
func (f *fakeProviderFixture) connect(name string) {
	f.t.Helper()
	if c, _ := getCredential(context.Background(), f.s, name); c == nil {
		mustOK(f.t, do(f.t, f.b, f.s, logical.CreateOperation, "creds/"+name, map[string]interface{}{"type": "oauth2", "service": "fakeidp", "app": "fake-app"}))
	}
	start := mustOK(f.t, do(f.t, f.b, f.s, logical.UpdateOperation, "creds/"+name+"/connect", map[string]interface{}{"replace": true})).Data
	u, _ := url.Parse(start["auth_url"].(string))
	code := "code-" + name + "-" + u.Query().Get("state")[:8]
	f.idp.AddCode(code)
	mustOK(f.t, do(f.t, f.b, f.s, logical.UpdateOperation, "creds/"+name+"/callback", map[string]interface{}{"code": code, "state": start["state"]}))
}

func (f *fakeProviderFixture) cred(name string) *credential {
	f.t.Helper()
	c, err := getCredential(context.Background(), f.s, name)
	if err != nil || c == nil {
		f.t.Fatalf("reading %s: %v", name, err)
	}
	return c
}

// TestShortTokensRefreshOncePerHalfLife: with 5-minute tokens and the
// default refresh_ahead of 10 minutes, neither a use nor a tick refreshes
// before half the token's life has passed, and each refresh after it comes
// once.
func TestShortTokensRefreshOncePerHalfLife(t *testing.T) {
	f := newFakeProviderFixture(t, 300)
	ctx := context.Background()
	f.connect("c")
	if due := f.cred("c").OAuth.RefreshDue; !due.Equal(f.clock.now().Add(150 * time.Second)) {
		t.Fatalf("due %s, want 150s from now", due.Sub(f.clock.now()))
	}
	for i := 0; i < 10; i++ {
		f.clock.advance(10 * time.Second)
		if _, err := f.b.oauthAccessToken(ctx, f.s, "c"); err != nil {
			t.Fatal(err)
		}
		f.b.oauth.background.Wait()
		if err := f.b.refreshDue(ctx, f.s); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.idp.Refreshes(); n != 0 {
		t.Fatalf("%d refreshes in the token's first 100 s", n)
	}
	// 30 minutes of use every 10 s and a tick a minute: one refresh per
	// 150 s, not one per use.
	for i := 0; i < 180; i++ {
		f.clock.advance(10 * time.Second)
		if _, err := f.b.oauthAccessToken(ctx, f.s, "c"); err != nil {
			t.Fatal(err)
		}
		f.b.oauth.background.Wait()
		if i%6 == 0 {
			if err := f.b.refreshDue(ctx, f.s); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := f.idp.Refreshes(); n < 11 || n > 13 {
		t.Fatalf("%d refreshes in 30 minutes of 5-minute tokens, want about 12", n)
	}
	read := mustOK(t, do(t, f.b, f.s, logical.ReadOperation, "creds/c", nil)).Data
	if next, _ := time.Parse(time.RFC3339, read["next_refresh_at"].(string)); !next.After(f.clock.now()) {
		t.Fatalf("next refresh %v is not in the future", read["next_refresh_at"])
	}
}

// TestExpiredTokenWithFailingRefreshNeedsAttention: while the provider
// fails, the credential stays active as long as its access token works,
// and needs attention the moment it expires, before any retry.
func TestExpiredTokenWithFailingRefreshNeedsAttention(t *testing.T) {
	f := newFakeProviderFixture(t, 300)
	ctx := context.Background()
	f.connect("c")
	f.idp.Fail = &provider.Error{Kind: provider.Transient, Status: 503, Msg: "refresh: the provider answered HTTP 503"}
	f.clock.advance(160 * time.Second)
	if err := f.b.refreshDue(ctx, f.s); err != nil {
		t.Fatal(err)
	}
	status := func() (string, string) {
		d := mustOK(t, do(t, f.b, f.s, logical.ReadOperation, "creds/c", nil)).Data
		return d["status"].(string), d["status_reason"].(string)
	}
	if st, _ := status(); st != statusActive {
		t.Fatalf("status %s while the access token still works", st)
	}
	f.clock.advance(141 * time.Second)
	st, reason := status()
	if st != statusNeedsAttention || !strings.Contains(reason, "access token expired") || !strings.Contains(reason, "503") {
		t.Fatalf("status %s (%s) once the access token expired", st, reason)
	}
	list := mustOK(t, do(t, f.b, f.s, logical.ListOperation, "creds/", nil)).Data["key_info"].(map[string]interface{})
	if got := list["c"].(credKeyInfo).Status; got != statusNeedsAttention {
		t.Fatalf("LIST shows %v", got)
	}
	// The provider recovers: the next retry makes it active again.
	f.idp.Fail = nil
	f.clock.advance(10 * time.Minute)
	if err := f.b.refreshDue(ctx, f.s); err != nil {
		t.Fatal(err)
	}
	if st, reason := status(); st != statusActive {
		t.Fatalf("status %s (%s) after the provider recovered", st, reason)
	}
}

// TestFiveMinuteTokensFromARealServer: the fosite server with 5-minute
// access tokens (Keycloak's default) gets a refresh once per half-life.
func TestFiveMinuteTokensFromARealServer(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{AccessTokenLifespan: 5 * time.Minute}, nil)
	ctx := context.Background()
	f.connect("c")
	// expires_in is whole seconds of the server's clock: 299 or 300.
	if due := f.cred("c").OAuth.RefreshDue.Sub(f.clock.now()); due < 148*time.Second || due > 150*time.Second {
		t.Fatalf("due in %s, want 150s", due)
	}
	before := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken)
	for i := 0; i < 60; i++ { // 10 minutes, a use every 10 s
		f.clock.advance(10 * time.Second)
		if _, err := f.b.oauthAccessToken(ctx, f.s, "c"); err != nil {
			t.Fatal(err)
		}
		f.b.oauth.background.Wait()
	}
	if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken) - before; n < 3 || n > 5 {
		t.Fatalf("%d refreshes in 10 minutes of use, want about 4", n)
	}
}

// TestValidTokenNeverWaitsForARefresh: with the provider stuck, a call
// whose access token is still valid gets it at once; the refresh runs
// beside it and its token is stored when the provider answers.
func TestValidTokenNeverWaitsForARefresh(t *testing.T) {
	f := newFakeProviderFixture(t, 3600)
	ctx := context.Background()
	f.connect("c")
	old := f.cred("c").OAuth.AccessToken
	hold := make(chan struct{})
	f.idp.Hold = hold
	f.clock.advance(55 * time.Minute) // due, still valid
	got := make(chan string, 1)
	go func() {
		tok, _ := f.b.oauthAccessToken(ctx, f.s, "c")
		got <- tok
	}()
	select {
	case tok := <-got:
		if tok != old {
			t.Fatalf("got another token than the valid one")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call waited for the stuck provider")
	}
	close(hold)
	f.b.oauth.background.Wait()
	if now := f.cred("c").OAuth.AccessToken; now == old {
		t.Fatal("the refresh beside the call stored no new token")
	}
}

// TestExpiredGrantBacksOffOnUse: while the provider fails and the access
// token has expired, uses ask the provider at most once per 10 s, not once
// per call; once it answers again, the next try succeeds.
func TestExpiredGrantBacksOffOnUse(t *testing.T) {
	f := newFakeProviderFixture(t, 3600)
	ctx := context.Background()
	f.connect("c")
	f.idp.Fail = &provider.Error{Kind: provider.Transient, Status: 503, Msg: "refresh: the provider answered HTTP 503"}
	f.clock.advance(61 * time.Minute) // expired
	before := f.idp.Refreshes()
	for i := 0; i < 60; i++ { // 60 calls in 30 s
		if _, err := f.b.oauthAccessToken(ctx, f.s, "c"); err == nil {
			t.Fatal("a use got a token from an expired grant")
		}
		f.clock.advance(500 * time.Millisecond)
	}
	if n := f.idp.Refreshes() - before; n < 2 || n > 4 {
		t.Fatalf("%d token requests for 60 calls in 30 s, want about 3", n)
	}
	if g := f.cred("c").OAuth; g.RetryAt.Sub(f.clock.now()) > retryMax {
		t.Fatalf("the scheduled retry is %s away, more than %s", g.RetryAt.Sub(f.clock.now()), retryMax)
	}
	f.idp.Fail = nil
	f.clock.advance(onUseRetry)
	if tok, err := f.b.oauthAccessToken(ctx, f.s, "c"); err != nil || tok == "" {
		t.Fatalf("after the provider recovered: %v", err)
	}
}

// TestRefreshFailingRetriesEveryFailingGrant: after an outage one write
// retries every failing grant; a working one and a dead one are left.
func TestRefreshFailingRetriesEveryFailingGrant(t *testing.T) {
	f := newFakeProviderFixture(t, 3600)
	for _, n := range []string{"a", "b", "c", "ok"} {
		f.connect(n)
	}
	f.idp.Fail = &provider.Error{Kind: provider.Transient, Status: 503, Msg: "refresh: the provider answered HTTP 503"}
	for _, n := range []string{"a", "b", "c"} {
		if _, err := doErr(f.b, f.s, logical.UpdateOperation, "creds/"+n+"/refresh", nil); err == nil {
			t.Fatalf("refreshing %s during the outage succeeded", n)
		}
	}
	f.idp.Fail = nil
	before := f.idp.Refreshes()
	resp := mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "refresh-failing", nil))
	if got := resp.Data["refreshed"].([]string); strings.Join(got, ",") != "a,b,c" {
		t.Fatalf("refreshed %v, want a, b and c", got)
	}
	if n := f.idp.Refreshes() - before; n != 3 {
		t.Fatalf("%d token requests, want 3 (not the working grant)", n)
	}
	for _, n := range []string{"a", "b", "c"} {
		if g := f.cred(n).OAuth; g.RefreshFailures != 0 {
			t.Errorf("%s still failing", n)
		}
	}
}
