package credentials

import (
	"context"

	"github.com/hashicorp/vault/sdk/logical"
)

// revokeGrant revokes c's grant at its provider and reports what was and
// was not revoked. The provider adapters arrive with the OAuth lifecycle.
func (b *backend) revokeGrant(_ context.Context, _ logical.Storage, c *credential) map[string]interface{} {
	return map[string]interface{}{
		"revoked":     []string{},
		"not_revoked": []string{"refresh_token", "access_token"},
		"reason":      "revocation at the provider is not available yet",
	}
}
