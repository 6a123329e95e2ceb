package credentials

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/plugin/provider"
	"github.com/clankteam/credentials/plugin/store"
)

// A refresh spends the stored refresh token at the provider, which may
// rotate it: if the answer never reaches storage, the grant can be lost.
// Two rules keep that from happening silently:
//
//   - Fence: before the provider is asked, a small refresh record is
//     written. A node that may no longer write (a deposed or frozen
//     leader, a standby) fails that write and stops before the call.
//   - Recover: a record whose refresh token is still the stored one means
//     the answer never arrived (the node stopped or lost leadership while
//     the call was in flight). Once the record is older than a refresh can
//     take, the grant is refreshed once more with the stored token; if the
//     provider refuses it, the credential says so in plain words.
//
// A record younger than that, written by another node, may belong to a
// refresh still in flight there: this node does not refresh the grant
// meanwhile, so two nodes never spend one single-use token at once.
const refreshRecordPrefix = "refreshing/"

// refreshRecord says a refresh was sent and its answer may not be stored.
type refreshRecord struct {
	Node      string    `json:"node"`
	StartedAt time.Time `json:"started_at"`
	// From is the hash of the refresh token the refresh spends; the
	// stored grant no longer has it once the answer is stored.
	From string `json:"from"`
	Mode string `json:"mode"`
}

func getRefreshRecord(ctx context.Context, s logical.Storage, name string) (*refreshRecord, error) {
	return store.ReadJSON[refreshRecord](ctx, s, refreshRecordPrefix+name, "the refresh record of "+name)
}

// fenceRefresh writes the refresh record of c's grant; an error means
// this node must not ask the provider.
func (b *backend) fenceRefresh(ctx context.Context, s logical.Storage, c *credential, mode refreshMode) error {
	e, err := logical.StorageEntryJSON(refreshRecordPrefix+c.Name, refreshRecord{
		Node: b.nodeID, StartedAt: b.now().UTC(), From: tokenHash(c.OAuth.RefreshToken), Mode: mode.String(),
	})
	if err != nil {
		return err
	}
	return s.Put(ctx, e)
}

// clearRefreshRecord drops the record once the refresh's outcome is
// stored. A record left behind by a failed delete is harmless: its token
// is no longer the stored one, and recovery just drops it.
func (b *backend) clearRefreshRecord(ctx context.Context, s logical.Storage, name string) {
	if err := s.Delete(ctx, refreshRecordPrefix+name); err != nil {
		b.recoverPending.Store(true)
		b.logger.Warn("dropping a refresh record", "name", name, "error", err)
	}
}

// inFlightElsewhere says another node started refreshing g within the
// time a refresh may take, so its answer may still be stored.
func (b *backend) inFlightElsewhere(rec *refreshRecord, g *oauthGrant, now time.Time) bool {
	return rec != nil && rec.Node != b.nodeID && rec.From == tokenHash(g.RefreshToken) && now.Sub(rec.StartedAt) < refreshFlightTimeout
}

// recoverRefreshes handles the refresh records left by refreshes that
// never completed; the periodic function calls it before due refreshes.
// Records are left only by an earlier process or another node (a new
// active node starts the backend afresh), or by this one when a record
// could not be dropped or was still young: so storage is listed at the
// first tick and afterwards only when recoverPending says so, and a tick
// with nothing to do reads nothing.
func (b *backend) recoverRefreshes(ctx context.Context, s logical.Storage) error {
	if !b.recoverPending.Swap(false) {
		return nil
	}
	names, err := s.List(ctx, refreshRecordPrefix)
	if err != nil {
		b.recoverPending.Store(true)
		return fmt.Errorf("listing refresh records: %w", err)
	}
	for _, name := range names {
		if ctx.Err() != nil {
			b.recoverPending.Store(true) // the rest at the next tick
			return ctx.Err()
		}
		rec, err := getRefreshRecord(ctx, s, name)
		if err != nil || rec == nil {
			if err != nil {
				b.recoverPending.Store(true)
			}
			continue
		}
		c, err := getCredential(ctx, s, name)
		if err != nil {
			b.recoverPending.Store(true)
			continue
		}
		switch {
		case c == nil || c.OAuth == nil || c.OAuth.ReconnectRequired || tokenHash(c.OAuth.RefreshToken) != rec.From:
			// Completed (or the grant was replaced): nothing in flight.
			b.clearRefreshRecord(ctx, s, name)
			continue
		case b.now().Sub(rec.StartedAt) < refreshFlightTimeout:
			b.recoverPending.Store(true) // look again once it has aged
			continue
		}
		if _, held := b.oauth.heldFor(name); held {
			// This node has the answer in memory; storeHeldGrant
			// stores it on the next attempt.
			b.recoverPending.Store(true)
			continue
		}
		b.logger.Warn("a refresh never stored its answer; retrying once with the stored refresh token",
			"name", name, "started_at", rec.StartedAt.Format(time.RFC3339), "same_node", rec.Node == b.nodeID)
		r := b.refreshLocked(ctx, s, name, refreshRecovery, "")
		if r.err != nil {
			b.logger.Warn("the retried refresh failed", "name", name, "error", r.err)
		}
		// Once: whatever the outcome, the record is done with.
		b.clearRefreshRecord(ctx, s, name)
	}
	return nil
}

// recoveryFailure words a failure of the retried refresh so that the
// person reading the credential knows what happened.
func recoveryFailure(perr *provider.Error) *provider.Error {
	e := *perr
	e.Msg = "a refresh in flight when Vault stopped or changed leader never stored its answer; retried once with the stored refresh token: " + perr.Msg
	return &e
}

func newNodeID() string {
	id, err := randomToken()
	if err != nil {
		return fmt.Sprintf("node-%d", time.Now().UnixNano())
	}
	return id[:16]
}
