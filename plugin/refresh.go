package credentials

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/plugin/provider"
)

// Why a refresh runs; it decides whether a refresh is needed at all.
type refreshMode int

const (
	// refreshOnUse: a caller needs an access token; refresh when it
	// expires within refresh_ahead.
	refreshOnUse refreshMode = iota
	// refreshScheduled: the due index says so; refresh when due
	// (refresh_ahead, keep-alive or a retry).
	refreshScheduled
	// refreshForced: a person asked for it (creds/<name>/refresh).
	refreshForced
	// refreshRecovery: a refresh whose answer never reached storage is
	// tried once more (refresh_fence.go).
	refreshRecovery
	// refreshRefused: the service refused the access token (401 at the
	// edge); refresh unless the grant was refreshed or connected within
	// refusedGrace, by the caller told the same a moment before.
	refreshRefused
)

// refusedGrace is how recent a token counts as the answer to a refusal
// already, so that many calls refused at once cost one refresh.
const refusedGrace = 10 * time.Second

func (m refreshMode) String() string {
	switch m {
	case refreshOnUse:
		return "on_use"
	case refreshScheduled:
		return "scheduled"
	case refreshRecovery:
		return "recovery"
	case refreshRefused:
		return "refused"
	}
	return "forced"
}

// Retry backoff after a failed refresh: retryBase doubled per failure, at
// most retryMax.
const (
	retryBase = time.Minute
	retryMax  = 5 * time.Minute
	// onUseRetry is how often a use tries the provider again for a grant
	// whose access token has expired while refresh fails: often enough to
	// recover within seconds of the provider, never once per call.
	onUseRetry = 10 * time.Second
)

// refreshResult is what a refresh leaves: the access token that may be
// handed out (with its expiry), and the refresh's error, if any. A failed
// refresh can still leave a usable token: the old one, while it lasts.
type refreshResult struct {
	token  string
	expiry time.Time
	err    error
}

// errNotOAuth and its kin are the caller's mistakes, not failures.
var (
	errNotOAuth       = errors.New("not an oauth2 credential")
	errCredentialGone = errors.New("does not exist")
)

// refreshShared runs one refresh of credential name for all concurrent
// callers in the same mode: the first starts it, the others wait for it and
// share its result. The refresh runs under a context of its own, so one
// caller giving up does not fail the others.
func (b *backend) refreshShared(ctx context.Context, s logical.Storage, name string, mode refreshMode) refreshResult {
	// A node that cannot store the answer must not ask the provider: a
	// rotated single-use refresh token would be spent and lost. Vault
	// forwards a request that fails with ErrReadOnly to the active node.
	if !b.writeSafe() {
		return refreshResult{err: logical.ErrReadOnly}
	}
	key := name
	if mode == refreshForced || mode == refreshRefused {
		key = name + "\x00" + mode.String()
	}
	ch := b.oauth.flights.DoChan(key, func() (interface{}, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshFlightTimeout)
		defer cancel()
		return b.refreshLocked(fctx, s, name, mode, ""), nil
	})
	select {
	case r := <-ch:
		return r.Val.(refreshResult)
	case <-ctx.Done():
		return refreshResult{err: fmt.Errorf("waiting for the refresh of %s: %w", name, ctx.Err())}
	}
}

// refreshLocked refreshes credential name if mode calls for it, under the
// credential's lock, re-reading it first so that a refresh another caller
// just finished is not repeated. dueBucket names the due-index bucket the
// scheduler found the credential in ("" for other callers); that entry is
// removed unless the credential is still filed there.
//
// It runs four steps: load what the refresh needs, decide (a pure function
// of the grant, the mode and the time) whether to ask the provider, fence
// and ask, then apply the answer. The order of effects keeps the grant: a
// rotated refresh token is stored before the new access token is returned;
// when storing fails the grant is held in memory, stored by the next
// attempt, and the caller gets an error. No index lock is held while the
// provider is asked: the index is only locked inside refile's writes.
func (b *backend) refreshLocked(ctx context.Context, s logical.Storage, name string, mode refreshMode, dueBucket string) refreshResult {
	lock := b.credLock(name)
	lock.Lock()
	defer lock.Unlock()

	st, res, ok := b.loadRefresh(ctx, s, name)
	if dueBucket != "" && st.read {
		// Unless storage could not be read: then the entry stays, and the
		// next tick tries again.
		defer func() { b.dropDueEntry(ctx, s, name, st.c, dueBucket) }()
	}
	if !ok {
		return res
	}
	now := b.now()
	d := decideRefresh(mode, st.c, st.svc.OAuth, st.cfg, now)
	switch d.action {
	case refreshRefile:
		b.refileAndSave(ctx, s, st.c, d.due)
		return d.current
	case refreshKeep:
		return d.current
	}
	tok, res, ok := b.fenceAndAsk(ctx, s, st, mode, d.current, now)
	if !ok {
		return res
	}
	return b.applyRefresh(ctx, s, st, mode, tok, now)
}

// refreshState is what loadRefresh reads for one refresh.
type refreshState struct {
	read bool // the credential was read (it may not exist)
	c    *credential
	svc  *service
	app  *oauthApp
	cfg  *mountConfig
}

// loadRefresh reads credential name and what refreshing it needs. ok false
// means the refresh ends with res (st.read and st.c still say what was read,
// for the due index).
func (b *backend) loadRefresh(ctx context.Context, s logical.Storage, name string) (st refreshState, res refreshResult, ok bool) {
	c, err := getCredential(ctx, s, name)
	if err != nil {
		return st, refreshResult{err: err}, false
	}
	st.read, st.c = true, c
	if c == nil {
		b.oauth.dropHeld(name)
		return st, refreshResult{err: fmt.Errorf("credential %q %w", name, errCredentialGone)}, false
	}
	if c.Type != typeOAuth2 {
		return st, refreshResult{err: fmt.Errorf("credential %q: %w", name, errNotOAuth)}, false
	}
	if r, done := b.storeHeldGrant(ctx, s, c); done {
		return st, r, false
	}
	switch {
	case c.State == statusDisconnected:
		return st, refreshResult{err: fmt.Errorf("credential %q is disconnected: connect it again", name)}, false
	case !c.OAuth.Connected():
		return st, refreshResult{err: fmt.Errorf("credential %q is not connected yet: connect it first", name)}, false
	}
	st.svc, st.app, st.cfg, err = b.oauthContext(ctx, s, c)
	if err != nil {
		return st, refreshResult{err: err}, false
	}
	return st, refreshResult{}, true
}

// fenceAndAsk asks the provider for a refresh of st's grant, once no other
// node may be refreshing it and the refresh record is written. ok false
// means the refresh ends with res; current is what the caller gets then.
func (b *backend) fenceAndAsk(ctx context.Context, s logical.Storage, st refreshState, mode refreshMode, current refreshResult, now time.Time) (tok *provider.Token, res refreshResult, ok bool) {
	c, g := st.c, st.c.OAuth
	rec, err := getRefreshRecord(ctx, s, c.Name)
	if err != nil {
		// Not knowing whether another node is refreshing, do not; a
		// token that still works is still handed out.
		if current.token == "" {
			current.err = err
		}
		return nil, current, false
	}
	if b.inFlightElsewhere(rec, g, now) {
		b.metrics.refresh(mode, "deferred")
		b.recoverPending.Store(true)
		if current.token == "" {
			current.err = fmt.Errorf("credential %s: another Vault node started refreshing it at %s and may still store the answer; try again in a moment", c.Name, formatTime(rec.StartedAt))
		}
		return nil, current, false
	}
	if err := b.fenceRefresh(ctx, s, c, mode); err != nil {
		// Not asking the provider is what keeps the grant: this node
		// could not store a rotated refresh token.
		b.logger.Warn("not refreshing: this node cannot write its storage", "name", c.Name, "error", err)
		b.metrics.refresh(mode, "fenced")
		if current.token == "" {
			current.err = fmt.Errorf("credential %s was not refreshed: this Vault node cannot write its storage (%w), so the provider was not asked", c.Name, err)
		}
		return nil, current, false
	}
	tok, perr := b.requestRefresh(ctx, st.svc, st.app, g)
	if perr != nil {
		b.metrics.refresh(mode, failureOutcome(perr.Kind))
		if mode == refreshRecovery {
			perr = recoveryFailure(perr)
		}
		b.recordRefreshFailure(ctx, s, c, st.svc, st.cfg, perr, now)
		b.clearRefreshRecord(ctx, s, c.Name)
		if perr.Kind == provider.GrantDead {
			current.token = ""
		}
		current.err = fmt.Errorf("refreshing %s: %w", c.Name, perr)
		return nil, current, false
	}
	return tok, refreshResult{}, true
}

// applyRefresh stores the grant the provider's answer tok gives, before
// its access token is handed out.
func (b *backend) applyRefresh(ctx context.Context, s logical.Storage, st refreshState, mode refreshMode, tok *provider.Token, now time.Time) refreshResult {
	c, g := st.c, st.c.OAuth
	fromRT := g.RefreshToken
	wasFailing := g.RefreshFailures > 0 || g.ReconnectRequired
	ng := grantFromToken(g, tok, now, st.cfg.MaxTokenLifetime)
	c.OAuth = ng
	if wasFailing && c.State == statusNeedsAttention {
		c.State, c.StateReason = statusActive, ""
	}
	c.UpdatedAt = now.UTC()
	b.refile(ctx, s, c, refreshDueAt(ng, st.svc.OAuth, st.cfg, now), false)
	if err := b.saveCredential(ctx, s, c); err != nil {
		b.oauth.hold(c.Name, ng, fromRT)
		b.logger.Error("storing a refreshed grant failed; holding it in memory", "name", c.Name, "error", err)
		return refreshResult{err: fmt.Errorf("credential %s was refreshed at the provider, but storing the new grant failed (it is held in memory and stored on the next attempt): %w", c.Name, err)}
	}
	b.clearRefreshRecord(ctx, s, c.Name)
	b.metrics.refresh(mode, "ok")
	b.logger.Info("grant refreshed", "name", c.Name, "service", c.Service, "mode", mode.String(), "expires_in", int64(ng.Expiry.Sub(now).Seconds()))
	return refreshResult{token: ng.AccessToken, expiry: ng.Expiry}
}

// failureOutcome is a failed refresh's metrics label.
func failureOutcome(k provider.Kind) string {
	switch k {
	case provider.GrantDead:
		return "grant_dead"
	case provider.Refused:
		return "refused"
	}
	return "transient"
}

// storeHeldGrant stores a grant held in memory after a failed save, if it
// still belongs to c (nobody replaced the grant since). done says the
// caller must return r: storing failed again.
func (b *backend) storeHeldGrant(ctx context.Context, s logical.Storage, c *credential) (r refreshResult, done bool) {
	h, ok := b.oauth.heldFor(c.Name)
	if !ok {
		return refreshResult{}, false
	}
	stored := ""
	if c.OAuth != nil {
		stored = c.OAuth.RefreshToken
	}
	if c.OAuth == nil || (tokenHash(stored) != h.fromHash && stored != h.grant.RefreshToken) || c.State == statusDisconnected {
		// The grant was replaced (reconnect, import, disconnect).
		b.oauth.dropHeld(c.Name)
		return refreshResult{}, false
	}
	prev := c.OAuth
	c.OAuth = h.grant
	if err := b.saveCredential(ctx, s, c); err != nil {
		c.OAuth = prev
		return refreshResult{err: fmt.Errorf("credential %s holds a refreshed grant that storage still refuses: %w", c.Name, err)}, true
	}
	b.oauth.dropHeld(c.Name)
	b.clearRefreshRecord(ctx, s, c.Name)
	b.logger.Info("stored a held grant", "name", c.Name)
	return refreshResult{}, false
}

// oauthContext loads what a refresh of c needs: its service, app and the
// mount's configuration.
func (b *backend) oauthContext(ctx context.Context, s logical.Storage, c *credential) (*service, *oauthApp, *mountConfig, error) {
	svc, err := b.getService(ctx, s, c.Service)
	if err != nil {
		return nil, nil, nil, err
	}
	if svc == nil || svc.OAuth == nil || svc.OAuth.TokenURL == "" {
		return nil, nil, nil, fmt.Errorf("service %q of credential %s has no OAuth token endpoint", c.Service, c.Name)
	}
	app, err := getApp(ctx, s, c.App)
	if err != nil {
		return nil, nil, nil, err
	}
	if app == nil {
		return nil, nil, nil, fmt.Errorf("app %q of credential %s does not exist", c.App, c.Name)
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, nil, nil, err
	}
	return svc, app, cfg, nil
}

// requestRefresh sends one refresh_token grant of g to the provider.
func (b *backend) requestRefresh(ctx context.Context, svc *service, app *oauthApp, g *oauthGrant) (*provider.Token, *provider.Error) {
	return b.oauth.provider.Refresh(ctx, svc.OAuth, app.client(), g.RefreshToken)
}

// recordRefreshFailure stores what a failed refresh means for c: a dead
// grant needs reconnecting and is no longer scheduled; other failures are
// retried with backoff, and need attention once the access token has
// expired or when the provider refused outright.
func (b *backend) recordRefreshFailure(ctx context.Context, s logical.Storage, c *credential, svc *service, cfg *mountConfig, perr *provider.Error, now time.Time) {
	g := *c.OAuth
	g.RefreshFailures++
	g.RefreshError = perr.Error()
	g.FailedAt = now
	switch perr.Kind {
	case provider.GrantDead:
		g.ReconnectRequired = true
		g.RetryAt = time.Time{}
		c.State, c.StateReason = statusNeedsAttention, "reconnect required: "+perr.Error()
	default:
		g.RetryAt = retryTime(&g, now)
		if perr.Kind == provider.Refused || !tokenUsable(&g, now) {
			c.State, c.StateReason = statusNeedsAttention, "refresh failing: "+perr.Error()
		}
	}
	c.OAuth = &g
	c.UpdatedAt = now.UTC()
	b.refile(ctx, s, c, refreshDueAt(&g, svc.OAuth, cfg, now), false)
	b.logger.Warn("refresh failed", "name", c.Name, "service", c.Service, "code", perr.Code, "status", perr.Status, "failures", g.RefreshFailures)
	if err := b.saveCredential(ctx, s, c); err != nil {
		b.logger.Error("storing a refresh failure failed", "name", c.Name, "error", err)
	}
}

// validateImportedRefreshToken proves an imported refresh token works by
// refreshing it once, and keeps the grant that refresh gives in c. It
// returns a userError when the app or the token is refused, and any other
// error when storage fails; c must then not be stored. The caller holds
// c's lock.
func (b *backend) validateImportedRefreshToken(ctx context.Context, s logical.Storage, svc *service, c *credential) error {
	if err := b.validateOAuthCred(ctx, s, svc, c); err != nil {
		return err
	}
	if svc.OAuth == nil || svc.OAuth.TokenURL == "" {
		return userErrorf("service %s has no OAuth token endpoint to validate the refresh token with", svc.Name)
	}
	app, err := getApp(ctx, s, c.App)
	if err != nil {
		return fmt.Errorf("reading app %s to validate the refresh token: %w", c.App, err)
	}
	if app == nil {
		return userErrorf("app %q does not exist", c.App)
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return fmt.Errorf("reading the mount's configuration: %w", err)
	}
	tok, perr := b.requestRefresh(ctx, svc, app, c.OAuth)
	if perr != nil {
		if perr.Kind == provider.Transient {
			return userErrorf("could not validate the refresh token, the provider is unavailable (%s); try again", perr.Error())
		}
		return userErrorf("the refresh token was refused, nothing was stored: %s", perr.Error())
	}
	now := b.now()
	// A fresh grant: nothing of a previous one (account, scopes,
	// failures) carries over, except where it is filed.
	base := &oauthGrant{RefreshToken: c.OAuth.RefreshToken, RefreshDue: c.OAuth.RefreshDue}
	g := grantFromToken(base, tok, now, cfg.MaxTokenLifetime)
	g.ConnectedAt = now.UTC()
	b.fetchAccount(ctx, svc.OAuth, g)
	c.OAuth = g
	b.oauth.dropHeld(c.Name)
	b.refile(ctx, s, c, refreshDueAt(g, svc.OAuth, cfg, now), false)
	return nil
}
