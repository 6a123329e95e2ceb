package credentials

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/plugin/provider"
)

// revokeTimeout bounds one revocation call; disconnect and delete wait for
// it while holding the credential's lock.
const revokeTimeout = 15 * time.Second

// liveGrant is c's grant as the provider knows it: a newer grant the
// provider issued but storage refused (held) is the live one.
func (b *backend) liveGrant(c *credential) *oauthGrant {
	g := c.OAuth
	if h, ok := b.oauth.heldFor(c.Name); ok && g != nil && tokenHash(g.RefreshToken) == h.fromHash {
		return h.grant
	}
	return g
}

// revokeGrant revokes c's grant at its provider, the provider's way
// (the service's revoke_style), and reports what was and was not revoked.
// The caller holds c's lock and drops the tokens afterwards whatever the
// outcome: the receipt tells a person what is left to revoke by hand.
func (b *backend) revokeGrant(ctx context.Context, s logical.Storage, c *credential) map[string]interface{} {
	r := provider.NewReceipt("", "")
	g := b.liveGrant(c)
	if !g.Connected() {
		r.Method = "none"
		r.Reason = "nothing to revoke: the credential holds no tokens"
		return r.AsMap()
	}
	tokens := provider.Tokens{Access: g.AccessToken, Refresh: g.RefreshToken, Expiry: g.Expiry}
	svc, err := b.getService(ctx, s, c.Service)
	if err != nil || svc == nil || svc.OAuth == nil {
		r.Held(tokens)
		r.Because("the service %q cannot be read, so its revocation endpoint is unknown", c.Service)
		return r.AsMap()
	}
	r.Provider = svc.DisplayName
	r.Method = svc.OAuth.RevokeStyle
	if r.Method == "" {
		r.Method = revokeNone
	}
	app, err := getApp(ctx, s, c.App)
	if err != nil || app == nil {
		r.Held(tokens)
		r.Because("the app %q cannot be read, so the engine cannot authenticate to the provider", c.App)
		return r.AsMap()
	}
	ctx, cancel := context.WithTimeout(ctx, revokeTimeout)
	defer cancel()

	r = b.oauth.provider.Revoke(ctx, svc.DisplayName, svc.OAuth, app.client(), tokens)
	b.logger.Info("grant revoked at the provider", "name", c.Name, "method", r.Method, "revoked", strings.Join(r.Revoked, ","), "not_revoked", strings.Join(r.NotRevoked, ","))
	return r.AsMap()
}
