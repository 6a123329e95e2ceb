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

// lastUse is a credential's uses since the last flush.
type lastUse struct {
	At time.Time
	By string
	// Callers holds each caller's last use.
	Callers map[string]time.Time
}

// maxCallersKept bounds the callers remembered per credential; the ones
// that used it least recently are forgotten first.
const maxCallersKept = 32

// merge adds u's uses to the receiver's, keeping the later of each.
func (l *lastUse) merge(u lastUse) {
	if u.At.After(l.At) {
		l.At, l.By = u.At, u.By
	}
	if l.Callers == nil {
		l.Callers = map[string]time.Time{}
	}
	for by, at := range u.Callers {
		if at.After(l.Callers[by]) {
			l.Callers[by] = at
		}
	}
	trimCallers(l.Callers)
}

// trimCallers drops the least recent callers beyond maxCallersKept.
func trimCallers(callers map[string]time.Time) {
	for len(callers) > maxCallersKept {
		oldest := ""
		for by, at := range callers {
			if oldest == "" || at.Before(callers[oldest]) {
				oldest = by
			}
		}
		delete(callers, oldest)
	}
}

func (t *lastUseTracker) record(name, by string, at time.Time) {
	t.restore(name, lastUse{At: at, By: by, Callers: map[string]time.Time{by: at}})
}

// overlay puts a not yet flushed use into sum.
func (t *lastUseTracker) overlay(name string, sum *credSummary) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if u, ok := t.pending[name]; ok && u.At.After(sum.LastUsedAt) {
		sum.LastUsedAt = u.At
	}
}

// current returns c's last caller and each caller's last use, stored and
// pending together.
func (t *lastUseTracker) current(c *credential) (string, map[string]time.Time) {
	all := lastUse{At: c.LastUsedAt, By: c.LastUsedBy, Callers: map[string]time.Time{}}
	for by, at := range c.LastUsedByCaller {
		all.Callers[by] = at
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if u, ok := t.pending[c.Name]; ok {
		all.merge(u)
	}
	return all.By, all.Callers
}

// restore adds uses that could not be stored (or new ones) to the pending
// ones, keeping the later of each.
func (t *lastUseTracker) restore(name string, u lastUse) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == nil {
		t.pending = map[string]lastUse{}
	}
	cur := t.pending[name]
	cur.merge(u)
	t.pending[name] = cur
}

func (t *lastUseTracker) pendingCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
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
	stored := lastUse{At: c.LastUsedAt, By: c.LastUsedBy, Callers: c.LastUsedByCaller}
	if !u.At.After(stored.At) {
		return nil
	}
	stored.merge(u)
	c.LastUsedAt, c.LastUsedBy, c.LastUsedByCaller = stored.At, stored.By, stored.Callers
	return b.saveCredential(ctx, s, c)
}

// lastUseFlushEvery bounds the uses a crash can lose: those of the last
// few seconds. A flush writes only the credentials used since the last
// one, so an idle mount writes nothing.
const lastUseFlushEvery = 5 * time.Second

// flusher writes pending last uses from a goroutine of its own, so that
// they reach storage within a few seconds of the call instead of at the
// next periodic tick (about a minute), and a last time when the backend
// is cleaned up (unmount, reload, upgrade, seal, shutdown).
type flusher struct {
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func (b *backend) startLastUseFlusher(s logical.Storage, every time.Duration) {
	if s == nil {
		return
	}
	f := &flusher{stop: make(chan struct{}), done: make(chan struct{})}
	b.lastUseFlusher = f
	go func() {
		defer close(f.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-f.stop:
				// The final flush, bounded: a cleanup must not hang
				// on a storage that is going away.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				b.flushIfWriteSafe(ctx, s)
				cancel()
				return
			case <-tick.C:
				ctx, cancel := context.WithTimeout(context.Background(), every)
				b.flushIfWriteSafe(ctx, s)
				cancel()
			}
		}
	}()
}

func (b *backend) flushIfWriteSafe(ctx context.Context, s logical.Storage) {
	if !b.writeSafe() {
		return
	}
	if err := b.flushLastUse(ctx, s); err != nil {
		b.logger.Warn("storing last use", "error", err)
	}
	if err := b.trail.flush(ctx, s); err != nil {
		b.logger.Warn("storing agents' trails", "error", err)
	}
}

// cleanup is the framework's Clean: Vault calls it before it drops this
// backend. Pending last uses are stored first.
func (b *backend) cleanup(context.Context) {
	if b.loops != nil {
		b.loops.close()
	}
	if f := b.lastUseFlusher; f != nil {
		f.stopOnce.Do(func() { close(f.stop) })
		<-f.done
	}
}
