package credentials

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/oauthserver"
)

// TestProviderQuirks runs connect, a refresh and a refused refresh against
// each of the test server's quirk switches, with the catalog flags that
// describe that provider.
// Long on purpose: one case per provider quirk, each a few lines, side by side.
func TestProviderQuirks(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		quirks oauthserver.Quirks
		flags  map[string]interface{}
		// deadCode is the error a dead refresh token gets, as the
		// credential's reason shows it; "" skips that check.
		deadCode string
		check    func(t *testing.T, f *oauthFixture, before, after *oauthGrant)
	}{
		{
			name:     "errors with HTTP 200 (GitHub)",
			quirks:   oauthserver.Quirks{ErrorsWithHTTP200: true},
			flags:    map[string]interface{}{"errors_with_200": true},
			deadCode: "HTTP 400 invalid_grant",
		},
		{
			name:     "form-encoded unless Accept JSON (GitHub)",
			quirks:   oauthserver.GitHubQuirks,
			flags:    map[string]interface{}{"errors_with_200": true, "accept_json": true},
			deadCode: "invalid_grant",
			check: func(t *testing.T, f *oauthFixture, _, after *oauthGrant) {
				if !aboutAt(after.Expiry, f.clock.now().Add(time.Hour)) {
					t.Errorf("expiry %v: expires_in was not read", after.Expiry)
				}
			},
		},
		{
			name:     "form-encoded, catalog without accept_json",
			quirks:   oauthserver.Quirks{FormEncodedUnlessJSONAccept: true},
			flags:    map[string]interface{}{},
			deadCode: "invalid_grant",
			check: func(t *testing.T, f *oauthFixture, _, after *oauthGrant) {
				if !aboutAt(after.Expiry, f.clock.now().Add(time.Hour)) {
					t.Errorf("expiry %v: expires_in of a form-encoded answer was not read", after.Expiry)
				}
			},
		},
		{
			name:     "ok:false bodies (Slack)",
			quirks:   oauthserver.SlackQuirks,
			flags:    map[string]interface{}{"ok_field": true, "scope_separator": ","},
			deadCode: "HTTP 400 invalid_refresh_token",
		},
		{
			name:   "no expires_in",
			quirks: oauthserver.Quirks{OmitExpiresIn: true},
			check: func(t *testing.T, f *oauthFixture, _, after *oauthGrant) {
				// The fixture's config sets max_token_lifetime to 30m.
				if !after.Expiry.Equal(f.clock.now().Add(30 * time.Minute)) {
					t.Errorf("expiry %v, want now + max_token_lifetime", after.Expiry)
				}
			},
		},
		{
			name:     "no refresh token in refresh answers (Google)",
			quirks:   oauthserver.GoogleQuirks,
			deadCode: "invalid_grant",
			check: func(t *testing.T, f *oauthFixture, before, after *oauthGrant) {
				if after.RefreshToken != before.RefreshToken {
					t.Errorf("the refresh token changed although the provider sent none")
				}
			},
		},
		{
			name:     "single-use refresh tokens (Discord, GitHub Apps)",
			quirks:   oauthserver.DiscordQuirks,
			flags:    map[string]interface{}{"single_use_refresh": true},
			deadCode: "single-use",
			check: func(t *testing.T, f *oauthFixture, before, after *oauthGrant) {
				if after.RefreshToken == before.RefreshToken || f.srv.Introspect(before.RefreshToken) {
					t.Errorf("the rotated refresh token was not stored")
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newOAuthFixture(t, oauthserver.Options{Quirks: tc.quirks}, tc.flags)
			mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "config", map[string]interface{}{"max_token_lifetime": "30m"}))
			f.connect("c")
			before := f.cred("c").OAuth
			if !f.srv.Introspect(before.AccessToken) {
				t.Fatalf("connect through the quirk stored no working token")
			}
			// Three refreshes in a row: each must leave a working grant.
			for range 3 {
				f.clock.advance(time.Hour)
				tok, err := f.b.oauthAccessToken(ctx, f.s, "c")
				if err != nil || !f.srv.Introspect(tok) {
					t.Fatalf("refresh through the quirk: %v", err)
				}
			}
			after := f.cred("c").OAuth
			if after.AccessToken == before.AccessToken || after.RefreshFailures != 0 {
				t.Fatalf("the refresh did not store a new grant")
			}
			if tc.check != nil {
				tc.check(t, f, before, after)
			}
			if tc.deadCode == "" {
				return
			}
			// A dead refresh token is recognised through the quirk.
			c := f.cred("c")
			c.OAuth.RefreshToken = "dead-refresh-token"
			if err := f.b.saveCredential(ctx, f.s, c); err != nil {
				t.Fatal(err)
			}
			f.clock.advance(time.Hour)
			if _, err := f.b.oauthAccessToken(ctx, f.s, "c"); err == nil {
				t.Fatalf("a dead refresh token gave a token")
			}
			d := f.read("c")
			reason, _ := d["status_reason"].(string)
			if d["status"] != statusNeedsAttention || !strings.HasPrefix(reason, "reconnect required") || !strings.Contains(reason, tc.deadCode) {
				t.Fatalf("dead refresh token: status %v (%s), want reconnect required mentioning %s", d["status"], reason, tc.deadCode)
			}
		})
	}
}

func TestSlowTokenEndpoint(t *testing.T) {
	ctx := context.Background()
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.connect("c")
	old := f.cred("c").OAuth.AccessToken
	f.b.oauth.http.SetTimeout(100 * time.Millisecond)
	f.srv.SetQuirks(oauthserver.Quirks{TokenDelay: 2 * time.Second})

	f.clock.advance(55 * time.Minute)
	tok, err := f.b.oauthAccessToken(ctx, f.s, "c")
	if err != nil || tok != old {
		t.Fatalf("a slow provider must not fail a use while the old token lasts: %v", err)
	}
	f.b.oauth.background.Wait() // the refresh ran beside the call

	g := f.cred("c").OAuth
	if !strings.Contains(g.RefreshError, "did not answer in time") || g.RetryAt.IsZero() {
		t.Fatalf("timeout not recorded as a transient failure: %q", g.RefreshError)
	}
	f.srv.SetQuirks(oauthserver.Quirks{})
	f.clock.advance(3 * time.Minute)
	if err := f.b.refreshDue(ctx, f.s); err != nil {
		t.Fatal(err)
	}
	if g := f.cred("c").OAuth; g.AccessToken == old || g.RefreshFailures != 0 {
		t.Fatalf("the retry after the timeout did not refresh")
	}
}

// TestAcceptJSONIsSent checks the request side of accept_json.
func TestAcceptJSONIsSent(t *testing.T) {
	var accepts atomic.Int32
	spy := func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if strings.HasSuffix(r.URL.Path, "/token") && r.Header.Get("Accept") == "application/json" {
				accepts.Add(1)
			}
			return next.RoundTrip(r)
		})
	}
	f := newOAuthFixture(t, oauthserver.Options{Quirks: oauthserver.GitHubQuirks}, map[string]interface{}{"accept_json": true})
	f.b.oauth.client.Transport = spy(f.b.oauth.client.Transport)
	f.connect("c")
	if accepts.Load() != 1 {
		t.Fatalf("the code exchange did not ask for JSON")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
