package credentials

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/plugin/provider"
)

// oauthAccessToken returns a usable access token of the oauth2 credential
// name, refreshing it first when it expires within refresh_ahead. Callers of
// the same credential share one refresh. The caller must not hold the
// credential's lock: a refresh takes it.
func (b *backend) oauthAccessToken(ctx context.Context, s logical.Storage, name string) (string, error) {
	c, err := getCredential(ctx, s, name)
	if err != nil {
		return "", err
	}
	if c == nil {
		return "", fmt.Errorf("credential %q does not exist", name)
	}
	return b.accessTokenOf(ctx, s, c)
}

// accessTokenOf is oauthAccessToken for a credential the caller has just
// read: a token that is still fresh then costs no storage read and no lock,
// which is the broker's hot path.
func (b *backend) accessTokenOf(ctx context.Context, s logical.Storage, c *credential) (string, error) {
	if c.Type != typeOAuth2 {
		return "", fmt.Errorf("credential %q: %w", c.Name, errNotOAuth)
	}
	if c.ClientCredentials {
		return b.appToken(ctx, s, c)
	}
	if _, held := b.oauth.heldFor(c.Name); !held {
		cfg, err := b.brokerConfig(ctx, s)
		if err != nil {
			return "", err
		}
		if g := c.OAuth; c.State != statusDisconnected && tokenUsable(g, b.now()) {
			if needsRefresh(g, cfg, b.now()) {
				// Due but still valid: the call does not wait for the
				// provider; the refresh runs beside it (one per
				// credential, shared with every other caller).
				b.oauth.background.Go(func() { b.refreshShared(context.Background(), s, c.Name, refreshOnUse) })
			}
			return g.AccessToken, nil
		}
	}
	r := b.refreshShared(ctx, s, c.Name, refreshOnUse)
	if r.token != "" && (r.expiry.IsZero() || b.now().Before(r.expiry)) {
		// A failed refresh is recorded on the credential; the old token
		// still works until it expires.
		return r.token, nil
	}
	if r.err == nil {
		r.err = errors.New("the provider gave no access token")
	}
	return "", r.err
}

// serviceAccountToken mints a short-lived access token from the GCP
// service-account file credential c for scopes, acting as subject when set
// (domain-wide delegation). Tokens are cached until shortly before they
// expire, and concurrent requests for the same token share one mint.
func (b *backend) serviceAccountToken(ctx context.Context, c *credential, scopes []string, subject string) (string, time.Time, error) {
	return b.mintServiceAccountToken(ctx, c, scopes, subject)
}

// appToken is an app-only access token of credential c, whose app uses the
// client credentials grant: minted on use and cached in memory until
// shortly before it expires (nothing to store: a new one is minted as
// easily), with concurrent users sharing one mint.
func (b *backend) appToken(ctx context.Context, s logical.Storage, c *credential) (string, error) {
	if c.State == statusDisconnected {
		return "", &userError{Status: http.StatusForbidden, Permanent: true, Msg: "credential " + c.Name + " is disconnected"}
	}
	app, err := getApp(ctx, s, c.App)
	if err != nil {
		return "", err
	}
	if app == nil {
		return "", fmt.Errorf("app %q of credential %s does not exist", c.App, c.Name)
	}
	svc, err := b.brokerService(ctx, s, c.Service)
	if err != nil {
		return "", err
	}
	if svc == nil || svc.OAuth == nil || svc.OAuth.TokenURL == "" {
		return "", fmt.Errorf("service %q of credential %s has no OAuth token endpoint", c.Service, c.Name)
	}
	scopes := requestedScopes(svc, app)
	// The client secret's hash is in the key: a new secret mints anew.
	key := strings.Join([]string{c.Name, c.ID, app.ClientID, tokenHash(app.ClientSecret), strings.Join(scopes, " ")}, "\x00")
	t, err := b.mintCached(ctx, &b.oauth.appTokens, key, func(ctx context.Context) (*provider.Token, error) {
		tok, pe := b.oauth.provider.ClientCredentials(ctx, svc.OAuth, app.client(), scopes)
		if pe != nil {
			b.logger.Warn("client credentials grant failed", "name", c.Name, "code", pe.Code, "status", pe.Status)
			return nil, fmt.Errorf("credential %s: %w", c.Name, pe)
		}
		b.logger.Info("app token minted", "name", c.Name, "expires_in", tok.ExpiresIn)
		return tok, nil
	})
	return t.token, err
}
