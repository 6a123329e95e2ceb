package credentials

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The due index files each refreshable grant under the minute it is due:
// refresh/due/<minute>/<name>, where <minute> is Unix minutes, zero-padded
// so that keys sort by time. refresh/next holds a lower bound of the
// earliest filed minute, cached in memory, so a periodic tick with nothing
// due reads no more than that one entry (and usually nothing): its cost does
// not grow with the number of credentials.
//
// Entries are hints, never the truth: a tick re-reads each due credential
// under its lock and decides from the grant itself, so a stale or orphaned
// entry only costs one read, and a crash between writing an entry and the
// credential loses nothing. The first tick of a backend instance files any
// grant that has no entry (a crash after storing the credential but before
// filing it).
const (
	dueIndexPrefix = "refresh/due/"
	dueNextKey     = "refresh/next"
	dueBucketWidth = time.Minute
	// refreshWorkers bounds the refreshes one tick runs at once.
	refreshWorkers = 16
)

// refreshSchedule is the due index's in-memory side on this node.
type refreshSchedule struct {
	// tickMu keeps ticks from overlapping.
	tickMu sync.Mutex
	// swept: this instance filed unfiled grants already (first tick).
	swept bool

	// mu guards next and nextLoaded, and serialises writes of refresh/next.
	mu         sync.Mutex
	next       time.Time // zero: nothing filed
	nextLoaded bool

	// unfiledMu guards unfiled: credentials whose entry could not be
	// written, filed again by the next tick.
	unfiledMu sync.Mutex
	unfiled   map[string]bool
}

func dueBucket(t time.Time) string {
	return fmt.Sprintf("%011d", t.Unix()/int64(dueBucketWidth/time.Second))
}

func dueBucketStart(bucket string) (time.Time, bool) {
	n, err := strconv.ParseInt(strings.TrimSuffix(bucket, "/"), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(n*int64(dueBucketWidth/time.Second), 0).UTC(), true
}

func dueEntryKey(bucket, name string) string { return dueIndexPrefix + bucket + "/" + name }

// refile files c's grant under due (zero: unfiles it) and records that in
// c, which the caller then saves; it holds c's lock. Unless force, nothing
// is written when c is already filed in due's minute. A failed write is
// logged and retried by the next tick: the schedule is an optimisation,
// refresh on use does not depend on it.
func (b *backend) refile(ctx context.Context, s logical.Storage, c *credential, due time.Time, force bool) bool {
	g := c.OAuth
	if g == nil {
		return false
	}
	oldBucket, newBucket := "", ""
	if !g.RefreshDue.IsZero() {
		oldBucket = dueBucket(g.RefreshDue)
	}
	if !due.IsZero() {
		newBucket = dueBucket(due)
	}
	if oldBucket == newBucket && (!force || newBucket == "") {
		changed := !g.RefreshDue.Equal(due)
		g.RefreshDue = due
		return changed
	}
	if newBucket != "" {
		if err := s.Put(ctx, &logical.StorageEntry{Key: dueEntryKey(newBucket, c.Name)}); err != nil {
			b.logger.Warn("filing a refresh failed; the next tick retries", "name", c.Name, "error", err)
			b.oauth.sched.markUnfiled(c.Name)
			return false
		}
		b.oauth.sched.lowerNext(ctx, s, due, b.logger.Warn)
	}
	if oldBucket != "" && oldBucket != newBucket {
		// An entry left behind is removed when its minute comes.
		_ = s.Delete(ctx, dueEntryKey(oldBucket, c.Name))
	}
	changed := !g.RefreshDue.Equal(due)
	g.RefreshDue = due
	return changed
}

// refileAndSave files c under due and saves c if that changed anything.
func (b *backend) refileAndSave(ctx context.Context, s logical.Storage, c *credential, due time.Time) {
	if b.refile(ctx, s, c, due, false) {
		if err := b.saveCredential(ctx, s, c); err != nil {
			b.logger.Warn("storing a credential's refresh time failed", "name", c.Name, "error", err)
		}
	}
}

// dropDueEntry removes the entry bucket/name once the tick handled it,
// unless the credential c (nil when deleted) is still filed there.
func (b *backend) dropDueEntry(ctx context.Context, s logical.Storage, name string, c *credential, bucket string) {
	if c != nil && c.Type == typeOAuth2 && c.State != statusDisconnected && c.OAuth != nil &&
		!c.OAuth.RefreshDue.IsZero() && dueBucket(c.OAuth.RefreshDue) == bucket {
		return
	}
	if err := s.Delete(ctx, dueEntryKey(bucket, name)); err != nil {
		b.logger.Warn("removing a handled due entry failed", "name", name, "error", err)
	}
}

func (r *refreshSchedule) markUnfiled(name string) {
	r.unfiledMu.Lock()
	defer r.unfiledMu.Unlock()
	if r.unfiled == nil {
		r.unfiled = map[string]bool{}
	}
	r.unfiled[name] = true
}

func (r *refreshSchedule) takeUnfiled() []string {
	r.unfiledMu.Lock()
	defer r.unfiledMu.Unlock()
	names := make([]string, 0, len(r.unfiled))
	for n := range r.unfiled {
		names = append(names, n)
	}
	r.unfiled = nil
	return names
}

type nextEntry struct {
	At time.Time `json:"at,omitzero"`
}

// loadNext reads refresh/next unless cached; the caller holds mu.
func (r *refreshSchedule) loadNext(ctx context.Context, s logical.Storage) error {
	if r.nextLoaded {
		return nil
	}
	entry, err := s.Get(ctx, dueNextKey)
	if err != nil {
		return fmt.Errorf("reading the refresh schedule: %w", err)
	}
	var n nextEntry
	if entry != nil {
		if err := entry.DecodeJSON(&n); err != nil {
			return fmt.Errorf("decoding the refresh schedule: %w", err)
		}
	}
	r.next, r.nextLoaded = n.At, true
	return nil
}

func (r *refreshSchedule) storeNext(ctx context.Context, s logical.Storage, at time.Time) error {
	entry, err := logical.StorageEntryJSON(dueNextKey, nextEntry{At: at})
	if err != nil {
		return fmt.Errorf("encoding the refresh schedule: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing the refresh schedule: %w", err)
	}
	return nil
}

// nextDue is the earliest minute anything may be filed under; zero when
// nothing is.
func (r *refreshSchedule) nextDue(ctx context.Context, s logical.Storage) (time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.loadNext(ctx, s); err != nil {
		return time.Time{}, err
	}
	return r.next, nil
}

// lowerNext moves the lower bound down to due's minute if it is later.
// Memory is lowered even when storing fails, so this node's ticks stay
// right; the stored bound is recomputed by the next tick that lists.
func (r *refreshSchedule) lowerNext(ctx context.Context, s logical.Storage, due time.Time, warn func(string, ...interface{})) {
	start, _ := dueBucketStart(dueBucket(due))
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.loadNext(ctx, s); err != nil {
		warn("reading the refresh schedule failed", "error", err)
		r.nextLoaded = true // use the lowered bound in memory
	}
	if !r.next.IsZero() && !start.Before(r.next) {
		return
	}
	r.next = start
	if err := r.storeNext(ctx, s, start); err != nil {
		warn("storing the refresh schedule failed", "error", err)
	}
}

// invalidate drops the cached bound when another node changed it.
func (r *refreshSchedule) invalidate(key string) {
	if key != dueNextKey {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextLoaded = false
}

// refreshDue is the periodic function's refresh work: it stores grants held
// in memory, files grants whose filing failed, and refreshes everything due
// with bounded concurrency. A tick with nothing due reads no storage once
// the lower bound is cached.
func (b *backend) refreshDue(ctx context.Context, s logical.Storage) error {
	sch := &b.oauth.sched
	if !sch.tickMu.TryLock() {
		return nil // the previous tick is still running
	}
	defer sch.tickMu.Unlock()

	for _, name := range b.oauth.heldNames() {
		if r := b.refreshLocked(ctx, s, name, refreshScheduled, ""); r.err != nil {
			b.logger.Warn("storing a held grant failed again", "name", name, "error", r.err)
		}
	}
	for _, name := range sch.takeUnfiled() {
		b.fileGrant(ctx, s, name)
	}
	if !sch.swept {
		if err := b.sweepSchedule(ctx, s); err != nil {
			return err
		}
		sch.swept = true
	}

	next, err := sch.nextDue(ctx, s)
	if err != nil {
		return err
	}
	now := b.now()
	if next.IsZero() || next.After(now) {
		b.metrics.tick(0, time.Time{}, now)
		return nil
	}

	jobs, err := dueEntries(ctx, s, dueBucket(now))
	if err != nil {
		return err
	}
	b.metrics.tick(len(jobs), next, now)
	b.runDue(ctx, s, jobs)

	// Recompute the bound from what is left. Filing takes mu only after
	// its entry is written, so an entry filed while this runs is either
	// listed here or lowers the bound after it is stored.
	sch.mu.Lock()
	defer sch.mu.Unlock()
	first, err := firstDueBucket(ctx, s)
	if err != nil {
		return err
	}
	sch.next, sch.nextLoaded = first, true
	return sch.storeNext(ctx, s, first)
}

// dueJob is one due-index entry to handle.
type dueJob struct{ bucket, name string }

// dueEntries lists the entries filed under minutes up to and including
// last.
func dueEntries(ctx context.Context, s logical.Storage, last string) ([]dueJob, error) {
	buckets, err := s.List(ctx, dueIndexPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing the refresh schedule: %w", err)
	}
	sort.Strings(buckets)
	var jobs []dueJob
	for _, bk := range buckets {
		bk = strings.TrimSuffix(bk, "/")
		if bk > last {
			break
		}
		names, err := s.List(ctx, dueIndexPrefix+bk+"/")
		if err != nil {
			return nil, fmt.Errorf("listing the refresh schedule: %w", err)
		}
		for _, n := range names {
			jobs = append(jobs, dueJob{bucket: bk, name: n})
		}
	}
	return jobs, nil
}

// firstDueBucket is the start of the earliest minute with an entry; zero
// when there is none.
func firstDueBucket(ctx context.Context, s logical.Storage) (time.Time, error) {
	buckets, err := s.List(ctx, dueIndexPrefix)
	if err != nil {
		return time.Time{}, fmt.Errorf("listing the refresh schedule: %w", err)
	}
	sort.Strings(buckets)
	for _, bk := range buckets {
		if t, ok := dueBucketStart(bk); ok {
			return t, nil
		}
	}
	return time.Time{}, nil
}

// runDue handles jobs with at most refreshWorkers at once.
func (b *backend) runDue(ctx context.Context, s logical.Storage, jobs []dueJob) {
	work := make(chan dueJob)
	var wg sync.WaitGroup
	for i := 0; i < min(refreshWorkers, len(jobs)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				r := b.refreshLocked(ctx, s, j.name, refreshScheduled, j.bucket)
				switch {
				case r.err == nil:
				case errors.Is(r.err, errCredentialGone) || errors.Is(r.err, errNotOAuth):
					// An entry left behind by a credential deleted (or
					// replaced by another type) is dropped; nothing failed.
					b.logger.Debug("dropped the due entry of a credential that is gone", "name", j.name)
				default:
					b.logger.Warn("scheduled refresh failed", "name", j.name, "error", r.err)
				}
			}
		}()
	}
	for _, j := range jobs {
		select {
		case work <- j:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
}

// fileGrant files credential name's grant at its due time.
func (b *backend) fileGrant(ctx context.Context, s logical.Storage, name string) {
	lock := b.credLock(name)
	lock.Lock()
	defer lock.Unlock()
	c, err := getCredential(ctx, s, name)
	if err != nil || c == nil || c.Type != typeOAuth2 || c.OAuth == nil || c.State == statusDisconnected {
		return
	}
	svc, err := b.getService(ctx, s, c.Service)
	if err != nil || svc == nil {
		return
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return
	}
	if b.refile(ctx, s, c, refreshDueAt(c.OAuth, svc.OAuth, cfg, b.now()), true) {
		if err := b.saveCredential(ctx, s, c); err != nil {
			b.logger.Warn("storing a credential's refresh time failed", "name", name, "error", err)
		}
	}
}

// sweepSchedule files every connected oauth2 credential that has no entry
// in the due index. It runs once per backend instance (after a restart or a
// change of active node), reading the index and only the unfiled
// credentials.
func (b *backend) sweepSchedule(ctx context.Context, s logical.Storage) error {
	filed := map[string]bool{}
	jobs, err := dueEntries(ctx, s, "~") // every minute
	if err != nil {
		return err
	}
	for _, j := range jobs {
		filed[j.name] = true
	}
	lines, err := b.index.Lines(ctx, s)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if l.Type != typeOAuth2 || l.NotConnected || l.State == statusDisconnected || filed[l.Name] {
			continue
		}
		b.fileGrant(ctx, s, l.Name)
	}
	// The stored bound may be stale after a crash: recompute it.
	first, err := firstDueBucket(ctx, s)
	if err != nil {
		return err
	}
	b.oauth.sched.mu.Lock()
	defer b.oauth.sched.mu.Unlock()
	b.oauth.sched.next, b.oauth.sched.nextLoaded = first, true
	return b.oauth.sched.storeNext(ctx, s, first)
}
