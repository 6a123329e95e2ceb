package credentials

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/plugin/store"
)

// The engine's names for the store's (plugin/store).
type (
	credential         = store.Credential
	oauthGrant         = store.OAuthGrant
	smtpSettings       = store.SMTPSettings
	githubAppSettings  = store.GitHubAppSettings
	serviceAccountInfo = store.ServiceAccountInfo
	credSummary        = store.Summary
	indexLine          = store.Line
)

// Statuses a credential can have; the first three are derived on read from
// what is stored and the clock.
const (
	statusActive         = store.StatusActive
	statusNeedsAttention = store.StatusNeedsAttention
	statusExpired        = store.StatusExpired
	statusDisconnected   = store.StatusDisconnected
)

var statuses = store.Statuses

const credStoragePrefix = store.Prefix

func credStorageKey(name string) string { return store.Key(name) }

// getCredential reads a credential; nil when there is none.
func getCredential(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	return store.Get(ctx, s, name)
}

// validateCredName allows names that are safe as one path segment anywhere:
// in Vault paths, portal URLs and storage keys.
func validateCredName(name string) error {
	if !contract.ValidCredName(name) {
		return userErrorMsg(contract.CredNameRule)
	}
	return nil
}

// saveCredential stores c and its index line (store.Index.Save). The
// caller holds the credential's lock.
// A change of its status is announced to the org's webhooks, and a key
// never checked wakes the health checks.
func (b *backend) saveCredential(ctx context.Context, s logical.Storage, c *credential) error {
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return err
	}
	b.announce(ctx, s, c, cfg.WarnBefore)
	if err := b.index.Save(ctx, s, c); err != nil {
		return err
	}
	b.healthSoon(c)
	return nil
}

// deleteCredential removes c, its index line and what hangs off it: its
// pending connect and its entry in the refresh schedule, so that nothing is
// left behind and a credential created again under the name starts clean.
// Those go first: when a later step fails the credential is still there,
// and deleting it again finishes the job. The caller holds c's lock.
func (b *backend) deleteCredential(ctx context.Context, s logical.Storage, c *credential) error {
	name := c.Name
	if err := s.Delete(ctx, pendingConnectPrefix+name); err != nil {
		return fmt.Errorf("deleting the pending connect of %s: %w", name, err)
	}
	if g := c.OAuth; g != nil && !g.RefreshDue.IsZero() {
		if err := s.Delete(ctx, dueEntryKey(dueBucket(g.RefreshDue), name)); err != nil {
			return fmt.Errorf("removing %s from the refresh schedule: %w", name, err)
		}
	}
	if err := b.deleteCredentialEntry(ctx, s, name); err != nil {
		// The credential may be left without its schedule entry: the next
		// tick files it again.
		b.oauth.sched.markUnfiled(name)
		return err
	}
	b.queueEvent(ctx, s, b.newEvent(b.mountPoint(), eventDeleted, eventData{Credential: name, Service: c.Service, CredType: c.Type}))
	return nil
}

func (b *backend) deleteCredentialEntry(ctx context.Context, s logical.Storage, name string) error {
	return b.index.Delete(ctx, s, name)
}
