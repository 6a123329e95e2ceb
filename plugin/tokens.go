package credentials

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// errTokensUnavailable is returned until the OAuth lifecycle is in place.
var errTokensUnavailable = errors.New("access tokens are not available yet")

// oauthAccessToken returns a usable access token of the oauth2 credential
// name, refreshing it first when it expires within refresh_ahead. Callers of
// the same credential share one refresh.
func (b *backend) oauthAccessToken(ctx context.Context, s logical.Storage, name string) (string, error) {
	return "", errTokensUnavailable
}

// serviceAccountToken mints a short-lived access token from the GCP
// service-account file credential c for scopes, acting as subject when set
// (domain-wide delegation).
func (b *backend) serviceAccountToken(ctx context.Context, c *credential, scopes []string, subject string) (string, time.Time, error) {
	return "", time.Time{}, errTokensUnavailable
}
