package credentials

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// lastUseTracker records when each credential was last used, and by whom,
// in memory, so that a brokered call costs no storage write; flush writes the
// records to storage from the periodic function.
type lastUseTracker struct {
	// mu guards pending.
	mu      sync.Mutex
	pending map[string]lastUse
}

type lastUse struct {
	At time.Time
	By string
}

func (t *lastUseTracker) record(name, by string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == nil {
		t.pending = map[string]lastUse{}
	}
	t.pending[name] = lastUse{At: at, By: by}
}

// overlay puts a not yet flushed use into sum.
func (t *lastUseTracker) overlay(name string, sum *credSummary) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if u, ok := t.pending[name]; ok && u.At.After(sum.LastUsedAt) {
		sum.LastUsedAt = u.At
	}
}

// by returns the last caller, pending or stored.
func (t *lastUseTracker) by(name, stored string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if u, ok := t.pending[name]; ok {
		return u.By
	}
	return stored
}

// restore puts back a use that could not be stored, unless a newer one came.
func (t *lastUseTracker) restore(name string, u lastUse) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == nil {
		t.pending = map[string]lastUse{}
	}
	if cur, ok := t.pending[name]; !ok || cur.At.Before(u.At) {
		t.pending[name] = u
	}
}

func (t *lastUseTracker) forget(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pending, name)
}

// take returns the pending uses and forgets them.
func (t *lastUseTracker) take() map[string]lastUse {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pending
	t.pending = nil
	return p
}

// flushLastUse writes pending uses into their credentials. A use whose
// write fails is put back for the next flush.
func (b *backend) flushLastUse(ctx context.Context, s logical.Storage) error {
	var firstErr error
	for name, u := range b.lastUse.take() {
		if err := b.storeLastUse(ctx, s, name, u); err != nil {
			b.lastUse.restore(name, u)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

func (b *backend) storeLastUse(ctx context.Context, s logical.Storage, name string, u lastUse) error {
	lock := b.credLock(name)
	lock.Lock()
	defer lock.Unlock()
	c, err := getCredential(ctx, s, name)
	if err != nil || c == nil {
		return err
	}
	if !u.At.After(c.LastUsedAt) {
		return nil
	}
	c.LastUsedAt, c.LastUsedBy = u.At, u.By
	return b.saveCredential(ctx, s, c)
}
