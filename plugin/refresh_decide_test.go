package credentials

import (
	"strings"
	"testing"
	"time"

	"github.com/clankteam/credentials/plugin/provider"
)

// TestDecideRefresh covers every rule of when a refresh asks the provider,
// without storage or a provider: decideRefresh is a function of the grant,
// the mode and the time.
// Long on purpose: the table is every rule of when to refresh.
func TestDecideRefresh(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cfg := &mountConfig{RefreshAhead: 10 * time.Minute}
	fresh := func() *oauthGrant {
		return &oauthGrant{
			AccessToken: "at", RefreshToken: "rt",
			ConnectedAt: now.Add(-time.Hour), Expiry: now.Add(time.Hour),
		}
	}
	cases := []struct {
		name   string
		mode   refreshMode
		grant  func(g *oauthGrant)
		spec   *oauthSpec
		action refreshAction
		token  bool   // current carries the access token
		errHas string // current.err says this ("" = no error)
		due    time.Time
	}{
		{name: "on use, fresh: keep", mode: refreshOnUse, action: refreshKeep, token: true},
		{name: "on use, within refresh_ahead: ask", mode: refreshOnUse,
			grant: func(g *oauthGrant) { g.Expiry = now.Add(5 * time.Minute) }, action: refreshAsk, token: true},
		{name: "on use, expired: ask without a token", mode: refreshOnUse,
			grant: func(g *oauthGrant) { g.Expiry = now.Add(-time.Second) }, action: refreshAsk},
		{name: "on use, short-lived token refreshed at half its life, not every use", mode: refreshOnUse,
			grant:  func(g *oauthGrant) { g.ConnectedAt = now.Add(-time.Minute); g.Expiry = now.Add(4 * time.Minute) },
			action: refreshKeep, token: true},
		{name: "on use, reconnect required: refuse", mode: refreshOnUse,
			grant:  func(g *oauthGrant) { g.ReconnectRequired = true; g.RefreshError = "invalid_grant" },
			action: refreshKeep, errHas: "reconnect required: invalid_grant"},
		{name: "on use, backing off while the old token works", mode: refreshOnUse,
			grant: func(g *oauthGrant) {
				g.Expiry = now.Add(5 * time.Minute)
				g.RetryAt = now.Add(time.Minute)
				g.RefreshFailures = 1
			}, action: refreshKeep, token: true},
		{name: "on use, expired and failing moments ago: no call per use", mode: refreshOnUse,
			grant: func(g *oauthGrant) {
				g.Expiry = now.Add(-time.Minute)
				g.RefreshFailures, g.RefreshError, g.FailedAt = 2, "server_error", now.Add(-time.Second)
			}, action: refreshKeep, errHas: "refresh failing (server_error)"},
		{name: "on use, expired and failing a while ago: ask again", mode: refreshOnUse,
			grant: func(g *oauthGrant) {
				g.Expiry = now.Add(-time.Minute)
				g.RefreshFailures, g.FailedAt = 2, now.Add(-onUseRetry)
			}, action: refreshAsk},
		{name: "no refresh token: say so", mode: refreshOnUse,
			grant:  func(g *oauthGrant) { g.RefreshToken = ""; g.Expiry = now.Add(-time.Second) },
			action: refreshKeep, errHas: "has no refresh token"},
		{name: "scheduled, not due: refile at refresh_ahead before expiry", mode: refreshScheduled,
			action: refreshRefile, token: true, due: now.Add(50 * time.Minute)},
		{name: "scheduled, keep-alive comes first", mode: refreshScheduled,
			grant:  func(g *oauthGrant) { g.Expiry = time.Time{} },
			spec:   &oauthSpec{KeepAlive: provider.Duration(2 * time.Hour)},
			action: refreshRefile, token: true, due: now.Add(time.Hour)},
		{name: "scheduled, due: ask", mode: refreshScheduled,
			grant: func(g *oauthGrant) { g.Expiry = now.Add(10 * time.Minute) }, action: refreshAsk, token: true},
		{name: "scheduled, retry time reached: ask", mode: refreshScheduled,
			grant: func(g *oauthGrant) { g.RetryAt = now.Add(-time.Second) }, action: refreshAsk, token: true},
		{name: "scheduled, dead grant: never due", mode: refreshScheduled,
			grant: func(g *oauthGrant) { g.ReconnectRequired = true }, action: refreshRefile},
		{name: "forced, fresh: ask", mode: refreshForced, action: refreshAsk, token: true},
		{name: "recovery, fresh: ask", mode: refreshRecovery, action: refreshAsk, token: true},
		{name: "forced, dead grant: ask (a person asked)", mode: refreshForced,
			grant: func(g *oauthGrant) { g.ReconnectRequired = true }, action: refreshAsk},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := fresh()
			if tc.grant != nil {
				tc.grant(g)
			}
			c := &credential{Name: "gh", Type: typeOAuth2, OAuth: g}
			before := *g
			d := decideRefresh(tc.mode, c, tc.spec, cfg, now)
			if d.action != tc.action {
				t.Fatalf("action = %d, want %d", d.action, tc.action)
			}
			if got := d.current.token != ""; got != tc.token {
				t.Errorf("current token handed out = %v, want %v", got, tc.token)
			}
			switch {
			case tc.errHas == "" && d.current.err != nil:
				t.Errorf("unexpected error: %v", d.current.err)
			case tc.errHas != "" && (d.current.err == nil || !strings.Contains(d.current.err.Error(), tc.errHas)):
				t.Errorf("error = %v, want one saying %q", d.current.err, tc.errHas)
			}
			if !d.due.Equal(tc.due) {
				t.Errorf("due = %v, want %v", d.due, tc.due)
			}
			if g.Expiry != before.Expiry || g.RetryAt != before.RetryAt || g.RefreshFailures != before.RefreshFailures {
				t.Error("decideRefresh changed the grant")
			}
		})
	}
}
