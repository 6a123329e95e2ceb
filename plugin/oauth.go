package credentials

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/plugin/provider"
)

// Timing of calls to OAuth providers.
const (
	// providerCallTimeout bounds one HTTP call to a provider.
	providerCallTimeout = 30 * time.Second
	// refreshFlightTimeout bounds one shared refresh, including waiting
	// for the credential's lock; it outlives any one caller's context so
	// that a caller giving up does not fail the others sharing it.
	refreshFlightTimeout = 2 * time.Minute
)

// oauthRuntime is the engine's in-memory OAuth state on this node.
type oauthRuntime struct {
	// client calls providers; it follows no redirect, so a token request
	// and its client secret never go to a host the catalog did not name.
	client *http.Client
	// http speaks OAuth over client; provider is what the engine calls
	// (http, or a fake in tests).
	http     *provider.HTTP
	provider provider.Client

	// flights shares one refresh among the concurrent users of one
	// credential (keyed by name; forced refreshes have keys of their own).
	flights singleflight.Group

	// heldMu guards held.
	heldMu sync.Mutex
	// held keeps grants a provider issued whose storing failed, by
	// credential name, so that a rotated refresh token is not lost: they
	// are stored on the credential's next use or the next tick.
	held map[string]heldGrant

	sched    refreshSchedule
	saTokens saTokenCache
	// appTokens caches client credentials tokens.
	appTokens saTokenCache
	// background counts refreshes started beside a call whose token was
	// still valid; tests wait for them.
	background sync.WaitGroup
}

// heldGrant is a grant not yet stored, and the refresh token it replaced.
type heldGrant struct {
	grant *oauthGrant
	// fromHash is the SHA-256 of the refresh token the grant came from: it
	// applies only while the stored grant is still that one.
	fromHash string
}

// newOAuthRuntime builds the provider client on the operator's dial guard:
// token, revocation, userinfo and service-account calls reach only public
// https endpoints, or the operator's private targets, and take no proxy
// from the environment.
func newOAuthRuntime(guard *egress.Guard) *oauthRuntime {
	c := guard.Client(egress.ClientOptions{})
	h := provider.New(c, providerCallTimeout)
	return &oauthRuntime{client: c, http: h, provider: h, held: map[string]heldGrant{}}
}

func (o *oauthRuntime) hold(name string, g *oauthGrant, fromRefreshToken string) {
	o.heldMu.Lock()
	defer o.heldMu.Unlock()
	o.held[name] = heldGrant{grant: g, fromHash: tokenHash(fromRefreshToken)}
}

func (o *oauthRuntime) heldFor(name string) (heldGrant, bool) {
	o.heldMu.Lock()
	defer o.heldMu.Unlock()
	h, ok := o.held[name]
	return h, ok
}

func (o *oauthRuntime) dropHeld(name string) {
	o.heldMu.Lock()
	defer o.heldMu.Unlock()
	delete(o.held, name)
}

func (o *oauthRuntime) heldNames() []string {
	o.heldMu.Lock()
	defer o.heldMu.Unlock()
	names := make([]string, 0, len(o.held))
	for n := range o.held {
		names = append(names, n)
	}
	return names
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// requestedScopes are the scopes a connect asks for: the app's, else the
// service's defaults.
func requestedScopes(svc *service, app *oauthApp) []string {
	if len(app.Scopes) > 0 {
		return app.Scopes
	}
	return svc.OAuth.DefaultScopes
}

// splitScopes reads a granted-scope string, space- or comma-separated.
func splitScopes(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' })
}

// grantFromToken is the grant a token response gives at now. A response
// without a refresh token keeps the old one; one without expires_in gets
// the configured maximum lifetime when the grant can be refreshed (a token
// that cannot be refreshed and states no lifetime does not expire).
func grantFromToken(old *oauthGrant, tok *provider.Token, now time.Time, maxLifetime time.Duration) *oauthGrant {
	g := &oauthGrant{}
	if old != nil {
		*g = *old
	}
	g.AccessToken = tok.AccessToken
	if tok.RefreshToken != "" {
		g.RefreshToken = tok.RefreshToken
	}
	g.TokenType = tok.TokenType
	g.Expiry = time.Time{}
	if secs := tok.ExpiresIn; secs > 0 {
		g.Expiry = now.Add(time.Duration(secs) * time.Second)
	} else if g.RefreshToken != "" {
		g.Expiry = now.Add(maxLifetime)
	}
	if tok.Scope != "" {
		g.Scopes = splitScopes(tok.Scope)
	}
	g.RefreshedAt = now
	g.RetryAt = time.Time{}
	g.FailedAt = time.Time{}
	g.RefreshFailures = 0
	g.RefreshError = ""
	g.ReconnectRequired = false
	return g
}

// fetchAccount asks the provider who granted the access and records it in
// g: its stable ID (sub) and a label for people (an email or login). Best
// effort: nothing when the service has no such endpoint or it fails.
func (b *backend) fetchAccount(ctx context.Context, spec *oauthSpec, g *oauthGrant) {
	a, err := b.oauth.provider.Account(ctx, spec, g.AccessToken)
	if err != nil {
		if !errors.Is(err, provider.ErrNoUserinfo) {
			b.logger.Warn("fetching the account identity failed", "url", spec.UserinfoURL, "error", err)
		}
		return
	}
	g.AccountID, g.Account = a.Subject, a.Label
}

func clip(s string, n int) string { return provider.Clip(s, n) }
