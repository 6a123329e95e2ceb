package credentials

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
)

// injectionFor returns how the service wants credentials of type t; a
// service that does not say gets the common conventions: a bearer token in
// Authorization, or HTTP basic for a user name and password.
func injectionFor(svc *service, t string) injection {
	if inj, ok := svc.Injection[t]; ok {
		return inj
	}
	if t == typePassword {
		return injection{Style: injectBasic}
	}
	return injection{Style: injectHeader, Header: "Authorization", Format: "Bearer {secret}"}
}

// credentialMaterial produces the secret to inject for c: the key, the
// password, an OAuth access token (refreshed when due) or an access token
// minted from a GCP service-account key. The caller zeroes it.
func (b *backend) credentialMaterial(ctx context.Context, s logical.Storage, svc *service, c *credential) (egress.Material, error) {
	switch c.Type {
	case typeAPIKey:
		return egress.Material{Secret: []byte(c.APIKey)}, nil
	case typePassword:
		return egress.Material{User: []byte(c.Username), Secret: []byte(c.Password)}, nil
	case typeOAuth2:
		if c.State == statusDisconnected {
			return egress.Material{}, userErrorf("credential %s is disconnected: connect it again", c.Name)
		}
		tok, err := b.accessTokenOf(ctx, s, c)
		if err != nil {
			return egress.Material{}, tokenError(c.Name, err)
		}
		return egress.Material{Secret: []byte(tok)}, nil
	case typeFile:
		if svc.GitHubApp {
			tok, err := b.githubAppToken(ctx, svc, c)
			if err != nil {
				return egress.Material{}, tokenError(c.Name, err)
			}
			return egress.Material{Secret: []byte(tok)}, nil
		}
		if c.ServiceAccount == nil {
			return egress.Material{}, userErrorf("credential %s is a plain file; only GCP service-account keys can be used through the broker", c.Name)
		}
		var scopes []string
		if svc.OAuth != nil {
			scopes = svc.OAuth.DefaultScopes
		}
		if len(scopes) == 0 {
			scopes = builtinServices["gcp-service-account"].OAuth.DefaultScopes
		}
		tok, _, err := b.serviceAccountToken(ctx, c, scopes, "")
		if err != nil {
			return egress.Material{}, tokenError(c.Name, err)
		}
		return egress.Material{Secret: []byte(tok)}, nil
	}
	return egress.Material{}, userErrorf("credential %s has unknown type %q", c.Name, c.Type)
}

// tokenError reports a failure to obtain an access token. The underlying
// error names the credential and the provider's error code, never a token.
func tokenError(name string, err error) error {
	if errors.Is(err, logical.ErrReadOnly) {
		// Vault forwards the request to the node that can refresh.
		return logical.ErrReadOnly
	}
	var be *userError
	if errors.As(err, &be) {
		return be
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &userError{Status: http.StatusGatewayTimeout, Msg: fmt.Sprintf("getting an access token for %s timed out", name)}
	}
	return &userError{Status: http.StatusBadGateway, Msg: fmt.Sprintf("no access token for %s: %v", name, err)}
}
