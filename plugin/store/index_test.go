package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/plugin/catalog"
)

func names(t *testing.T, x *Index, s logical.Storage) (string, map[string]Line) {
	t.Helper()
	lines, err := x.Lines(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	var ns []string
	by := map[string]Line{}
	for _, l := range lines {
		ns = append(ns, l.Name)
		by[l.Name] = l
	}
	return strings.Join(ns, " "), by
}

// TestIndexRepairsAfterCrash leaves the index as a crash between the
// credential write and the index write would, and checks that a fresh
// index over the same storage repairs it.
func TestIndexRepairsAfterCrash(t *testing.T) {
	ctx := context.Background()
	s := new(logical.InmemStorage)
	x := new(Index)
	for _, n := range []string{"a", "b", "c"} {
		c := &Credential{Name: n, Type: catalog.TypeAPIKey, Service: "stripe", APIKey: "sk_live_CANARY", State: StatusActive}
		if err := x.Save(ctx, s, c); err != nil {
			t.Fatal(err)
		}
	}
	// Crash 1: "a"'s description changed in storage, with the pending
	// mark written, but the index not updated.
	c, _ := Get(ctx, s, "a")
	c.Description = "changed before the crash"
	if err := x.MarkPending(ctx, s, "a"); err != nil {
		t.Fatal(err)
	}
	entry, _ := logical.StorageEntryJSON(Key("a"), c)
	if err := s.Put(ctx, entry); err != nil {
		t.Fatal(err)
	}
	// Crash 2: "b" deleted from storage but still indexed.
	if err := s.Delete(ctx, Key("b")); err != nil {
		t.Fatal(err)
	}
	// Crash 3: "d" stored without an index line or a mark (lost mark).
	d := &Credential{Name: "d", Type: catalog.TypeAPIKey, Service: "stripe", APIKey: "sk_live_CANARY", State: StatusActive}
	entry, _ = logical.StorageEntryJSON(Key("d"), d)
	if err := s.Put(ctx, entry); err != nil {
		t.Fatal(err)
	}
	// Crash 4: a shard is unreadable.
	if err := s.Put(ctx, &logical.StorageEntry{Key: shardKey(shardOf("c")), Value: []byte("{garbage")}); err != nil {
		t.Fatal(err)
	}

	got, lines := names(t, new(Index), s)
	if got != "a c d" {
		t.Fatalf("after repair names = %q, want \"a c d\"", got)
	}
	if lines["a"].Description != "changed before the crash" {
		t.Errorf("a's line was not refreshed: %+v", lines["a"])
	}
	if pending, _ := s.List(ctx, indexPendingPrefix); len(pending) != 0 {
		t.Errorf("pending marks left: %v", pending)
	}
	// The repaired index is stored: a third index needs no repair to agree.
	if got, _ := names(t, new(Index), s); got != "a c d" {
		t.Fatalf("third index names = %q", got)
	}
}

func TestHumanIn(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{30 * time.Second, "in less than a minute"},
		{90 * time.Second, "in 2 minutes"},
		{59*time.Minute + 50*time.Second, "in 1 hour"},
		{24 * time.Hour, "in 24 hours"},
		{72*time.Hour - time.Minute, "in 3 days"},
		{10*24*time.Hour + 11*time.Hour, "in 10 days"},
	} {
		if got := humanIn(tc.d); got != tc.want {
			t.Errorf("humanIn(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
