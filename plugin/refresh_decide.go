package credentials

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// What a refresh does once its credential is loaded.
type refreshAction int

const (
	// refreshKeep: the provider is not asked; the caller gets current.
	refreshKeep refreshAction = iota
	// refreshRefile: not due yet; the grant is filed at due, and the
	// caller gets current.
	refreshRefile
	// refreshAsk: the provider is asked.
	refreshAsk
)

// refreshDecision is decideRefresh's answer. current is the token that may
// be handed out without asking the provider (empty when it has expired or
// the grant needs reconnecting), with an error when that is all there is.
type refreshDecision struct {
	action  refreshAction
	current refreshResult
	due     time.Time
}

// decideRefresh says whether a refresh of c's grant in mode asks the
// provider at now. It reads nothing and changes nothing, so every rule of
// when to refresh is here and tested on its own (refresh_decide_test.go).
func decideRefresh(mode refreshMode, c *credential, spec *oauthSpec, cfg *mountConfig, now time.Time) refreshDecision {
	g := c.OAuth
	keep := refreshDecision{action: refreshKeep}
	if tokenUsable(g, now) {
		keep.current = refreshResult{token: g.AccessToken, expiry: g.Expiry}
	} else {
		keep.current = refreshResult{expiry: g.Expiry}
	}
	if mode == refreshOnUse && g.ReconnectRequired {
		keep.current.err = fmt.Errorf("credential %q: reconnect required: %s", c.Name, g.RefreshError)
		return keep
	}
	switch {
	case mode == refreshForced || mode == refreshRecovery:
	case mode == refreshRefused:
		latest := g.RefreshedAt
		if g.ConnectedAt.After(latest) {
			latest = g.ConnectedAt
		}
		if now.Sub(latest) < refusedGrace {
			return keep
		}
	case mode == refreshScheduled:
		due := refreshDueAt(g, spec, cfg, now)
		if due.IsZero() || due.After(now) {
			keep.action, keep.due = refreshRefile, due
			return keep
		}
	case !needsRefresh(g, cfg, now):
		return keep
	}
	if g.RefreshToken == "" {
		keep.current.err = fmt.Errorf("credential %q has no refresh token (the provider issued none): reconnect it when its access token expires", c.Name)
		return keep
	}
	if mode == refreshOnUse && keep.current.token != "" && now.Before(g.RetryAt) {
		// Backing off after a failure while the old token still works.
		return keep
	}
	if mode == refreshOnUse && keep.current.token == "" && g.RefreshFailures > 0 && now.Before(g.FailedAt.Add(onUseRetry)) {
		keep.current.err = fmt.Errorf("credential %s: refresh failing (%s); the provider is asked again from %s", c.Name, g.RefreshError, g.FailedAt.Add(onUseRetry).UTC().Format(time.RFC3339))
		return keep
	}
	return refreshDecision{action: refreshAsk, current: keep.current}
}

// retryTime is when to retry after g's failures: an exponential backoff
// with jitter, pulled in so that a retry still comes before the access
// token expires.
func retryTime(g *oauthGrant, now time.Time) time.Time {
	d := retryBase << min(g.RefreshFailures-1, 10)
	if d > retryMax {
		d = retryMax
	}
	d += time.Duration(rand.Int64N(int64(d/10) + 1))
	at := now.Add(d)
	if !g.Expiry.IsZero() && g.Expiry.After(now.Add(time.Minute)) && at.After(g.Expiry.Add(-30*time.Second)) {
		at = g.Expiry.Add(-30 * time.Second)
	}
	return at
}

// tokenUsable says whether g's access token may be handed out at now.
func tokenUsable(g *oauthGrant, now time.Time) bool {
	return g != nil && g.AccessToken != "" && !g.ReconnectRequired && (g.Expiry.IsZero() || now.Before(g.Expiry))
}

// needsRefresh says whether a user of g should refresh it first: its access
// token is missing or expires within refreshAhead.
func needsRefresh(g *oauthGrant, cfg *mountConfig, now time.Time) bool {
	if g.AccessToken == "" {
		return true
	}
	return !g.Expiry.IsZero() && !now.Before(g.Expiry.Add(-refreshAhead(g, cfg)))
}

// refreshAhead is how long before its expiry g is refreshed: refresh_ahead,
// but never more than half the token's lifetime, so that a token shorter
// than refresh_ahead (Keycloak's 5 minutes against the default 10) is
// refreshed once per half-life rather than on every use and every tick.
func refreshAhead(g *oauthGrant, cfg *mountConfig) time.Duration {
	ahead := cfg.RefreshAhead
	issued := g.RefreshedAt
	if g.ConnectedAt.After(issued) {
		issued = g.ConnectedAt
	}
	if !issued.IsZero() && !g.Expiry.IsZero() {
		if half := g.Expiry.Sub(issued) / 2; half > 0 && half < ahead {
			ahead = half
		}
	}
	return ahead
}

// refreshDueAt is when the scheduler should refresh g: refreshAhead before
// its access token expires, or earlier when the provider drops refresh
// tokens left unused for spec's keep_alive, or at the retry time after a
// failure. Zero: never (nothing to refresh with, or the grant is dead).
func refreshDueAt(g *oauthGrant, spec *oauthSpec, cfg *mountConfig, now time.Time) time.Time {
	if g == nil || g.RefreshToken == "" || g.ReconnectRequired {
		return time.Time{}
	}
	if !g.RetryAt.IsZero() {
		return g.RetryAt
	}
	var due time.Time
	switch {
	case g.AccessToken == "":
		due = now
	case !g.Expiry.IsZero():
		due = g.Expiry.Add(-refreshAhead(g, cfg))
	}
	if spec != nil && spec.KeepAlive > 0 {
		last := g.RefreshedAt
		if g.ConnectedAt.After(last) {
			last = g.ConnectedAt
		}
		if ka := last.Add(time.Duration(spec.KeepAlive)); due.IsZero() || ka.Before(due) {
			due = ka
		}
	}
	return due
}
