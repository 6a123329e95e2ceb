package credentials

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
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
	if _, held := b.oauth.heldFor(c.Name); !held {
		cfg, err := b.brokerConfig(ctx, s)
		if err != nil {
			return "", err
		}
		if g := c.OAuth; c.State != statusDisconnected && tokenUsable(g, b.now()) && !needsRefresh(g, cfg, b.now()) {
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
