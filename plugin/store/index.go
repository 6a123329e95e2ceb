package store

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/vault/sdk/logical"
)

// The inventory index lets LIST creds/ answer with each credential's type,
// service and status without reading every credential. It is kept in
// storage in shards (so no entry outgrows a storage backend's size limit and
// each write rewrites one small shard) and cached in memory on the node that
// serves the mount.
//
// Writers mark a credential pending before writing it and clear the mark
// after its index line is stored; on load, pending credentials are re-read,
// and the set of indexed names is checked against the stored credentials, so
// a crash between the two writes is repaired by the next load.
const (
	indexShards        = 256
	indexShardPrefix   = "index/creds/"
	indexPendingPrefix = "index/pending/"
)

// Index is the inventory index, cached in memory; the zero value is ready.
type Index struct {
	// loadMu serialises loading and resets; loaded is read without it.
	loadMu sync.Mutex
	loaded atomic.Bool
	shards [indexShards]indexShard

	// version counts changes, so the sorted view is rebuilt only after one.
	version atomic.Uint64
	// sortedMu guards sorted and sortedVersion.
	sortedMu      sync.Mutex
	sorted        []Line
	sortedVersion uint64
}

// indexShard is one shard; mu guards entries and the shard's storage entry.
type indexShard struct {
	mu      sync.Mutex
	entries map[string]Summary
}

// Line is one credential in the sorted view.
type Line struct {
	Name string
	Summary
}

func shardOf(name string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return int(h.Sum32() % indexShards)
}

func shardKey(i int) string { return fmt.Sprintf("%s%02x", indexShardPrefix, i) }

// Reset drops the cache; the next use reloads it from storage. Called when
// another node changed the index (Invalidate).
func (x *Index) Reset() {
	x.loadMu.Lock()
	defer x.loadMu.Unlock()
	x.loaded.Store(false)
	x.version.Add(1)
}

// EnsureLoaded loads the index from storage once.
func (x *Index) EnsureLoaded(ctx context.Context, s logical.Storage) error {
	if x.loaded.Load() {
		return nil
	}
	x.loadMu.Lock()
	defer x.loadMu.Unlock()
	if x.loaded.Load() {
		return nil
	}
	if err := x.load(ctx, s); err != nil {
		return err
	}
	x.version.Add(1)
	x.loaded.Store(true)
	return nil
}

// load reads every shard, then repairs what a crash may have left behind.
func (x *Index) load(ctx context.Context, s logical.Storage) error {
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.Lock()
		sh.entries = map[string]Summary{}
		entry, err := s.Get(ctx, shardKey(i))
		if err == nil && entry != nil {
			if derr := entry.DecodeJSON(&sh.entries); derr != nil {
				// A shard that cannot be read is rebuilt below from the
				// credentials themselves.
				sh.entries = nil
			}
		}
		sh.mu.Unlock()
		if err != nil {
			return fmt.Errorf("reading index shard %d: %w", i, err)
		}
	}
	return x.repair(ctx, s)
}

// repair re-indexes pending credentials, credentials missing from the index
// and undecodable shards, and drops index lines of deleted credentials.
func (x *Index) repair(ctx context.Context, s logical.Storage) error {
	names, err := s.List(ctx, Prefix)
	if err != nil {
		return fmt.Errorf("listing credentials: %w", err)
	}
	pending, err := s.List(ctx, indexPendingPrefix)
	if err != nil {
		return fmt.Errorf("listing pending index entries: %w", err)
	}
	stale := map[string]bool{}
	for _, n := range pending {
		stale[n] = true
	}
	stored := make(map[string]bool, len(names))
	for _, n := range names {
		stored[n] = true
		sh := &x.shards[shardOf(n)]
		if sh.entries == nil {
			stale[n] = true
			continue
		}
		if _, ok := sh.entries[n]; !ok {
			stale[n] = true
		}
	}
	dirty := map[int]bool{}
	for i := range x.shards {
		sh := &x.shards[i]
		if sh.entries == nil {
			sh.entries = map[string]Summary{}
			dirty[i] = true
		}
		for n := range sh.entries {
			if !stored[n] {
				delete(sh.entries, n)
				dirty[i] = true
			}
		}
	}
	for n := range stale {
		c, err := Get(ctx, s, n)
		if err != nil {
			return err
		}
		i := shardOf(n)
		if c == nil {
			delete(x.shards[i].entries, n)
		} else {
			x.shards[i].entries[n] = c.Summary()
		}
		dirty[i] = true
	}
	for i := range dirty {
		if err := x.writeShard(ctx, s, i); err != nil {
			return err
		}
	}
	for _, n := range pending {
		if err := s.Delete(ctx, indexPendingPrefix+n); err != nil {
			return fmt.Errorf("clearing pending index entry: %w", err)
		}
	}
	return nil
}

// writeShard stores shard i; the caller holds its lock (or loadMu during
// load, when no writer can reach the shards).
func (x *Index) writeShard(ctx context.Context, s logical.Storage, i int) error {
	entry, err := logical.StorageEntryJSON(shardKey(i), x.shards[i].entries)
	if err != nil {
		return fmt.Errorf("encoding index shard: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing index shard: %w", err)
	}
	return nil
}

// MarkPending marks name as being written: a load re-reads it.
func (x *Index) MarkPending(ctx context.Context, s logical.Storage, name string) error {
	if err := s.Put(ctx, &logical.StorageEntry{Key: indexPendingPrefix + name}); err != nil {
		return fmt.Errorf("marking index entry pending: %w", err)
	}
	return nil
}

// ClearPending drops the mark once name's line is stored.
func (x *Index) ClearPending(ctx context.Context, s logical.Storage, name string) error {
	if err := s.Delete(ctx, indexPendingPrefix+name); err != nil {
		return fmt.Errorf("clearing pending index entry: %w", err)
	}
	return nil
}

// Put sets name's line. Memory is updated even when the storage write fails:
// memory then matches the stored credential, and the pending mark left by
// the failed save repairs the stored shard on the next load.
func (x *Index) Put(ctx context.Context, s logical.Storage, name string, sum Summary) error {
	return x.change(ctx, s, name, func(m map[string]Summary) { m[name] = sum })
}

// Remove drops name's line.
func (x *Index) Remove(ctx context.Context, s logical.Storage, name string) error {
	return x.change(ctx, s, name, func(m map[string]Summary) { delete(m, name) })
}

func (x *Index) change(ctx context.Context, s logical.Storage, name string, f func(map[string]Summary)) error {
	if err := x.EnsureLoaded(ctx, s); err != nil {
		return err
	}
	i := shardOf(name)
	sh := &x.shards[i]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	f(sh.entries)
	x.version.Add(1)
	return x.writeShard(ctx, s, i)
}

// Lines returns every credential's line sorted by name. The slice is shared
// between callers and must not be modified.
func (x *Index) Lines(ctx context.Context, s logical.Storage) ([]Line, error) {
	if err := x.EnsureLoaded(ctx, s); err != nil {
		return nil, err
	}
	x.sortedMu.Lock()
	defer x.sortedMu.Unlock()
	v := x.version.Load()
	if x.sorted != nil && x.sortedVersion == v {
		return x.sorted, nil
	}
	var all []Line
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.Lock()
		for n, sum := range sh.entries {
			all = append(all, Line{Name: n, Summary: sum})
		}
		sh.mu.Unlock()
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	x.sorted, x.sortedVersion = all, v
	return all, nil
}

// IsIndexKey says whether a storage key belongs to the index or to a
// credential, whose change elsewhere makes the cache stale.
func IsIndexKey(key string) bool {
	return strings.HasPrefix(key, indexShardPrefix) || strings.HasPrefix(key, Prefix)
}

// Save stores c and its index line. The caller holds the credential's
// lock. A pending marker written first and removed last lets the index be
// repaired if the process dies between the two writes.
func (x *Index) Save(ctx context.Context, s logical.Storage, c *Credential) error {
	if err := x.MarkPending(ctx, s, c.Name); err != nil {
		return err
	}
	c.Revision++
	entry, err := logical.StorageEntryJSON(Key(c.Name), c)
	if err != nil {
		return fmt.Errorf("encoding credential %s: %w", c.Name, err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing credential %s: %w", c.Name, err)
	}
	if err := x.Put(ctx, s, c.Name, c.Summary()); err != nil {
		return err
	}
	return x.ClearPending(ctx, s, c.Name)
}

// Delete removes credential name and its index line, in the same order.
func (x *Index) Delete(ctx context.Context, s logical.Storage, name string) error {
	if err := x.MarkPending(ctx, s, name); err != nil {
		return err
	}
	if err := s.Delete(ctx, Key(name)); err != nil {
		return fmt.Errorf("deleting credential %s: %w", name, err)
	}
	if err := x.Remove(ctx, s, name); err != nil {
		return err
	}
	return x.ClearPending(ctx, s, name)
}
