package credentials

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestLastUsePerCaller records uses by several callers, flushes them, and
// checks that each caller's last use is kept, in memory and in storage.
func TestLastUsePerCaller(t *testing.T) {
	b, s, clock := getTestBackend(t)
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/k", apiKeyCred("")))
	t0 := clock.now()
	b.lastUse.record("k", "agent-a", t0)
	b.lastUse.record("k", "agent-b", t0.Add(time.Minute))
	b.lastUse.record("k", "agent-a", t0.Add(2*time.Minute))
	b.lastUse.record("k", "agent-c", t0.Add(-time.Hour)) // late report of an older use

	check := func(when string) {
		t.Helper()
		resp := mustOK(t, do(t, b, s, logical.ReadOperation, "creds/k", nil))
		if resp.Data["last_used_by"] != "agent-a" || resp.Data["last_used_at"] != formatTime(t0.Add(2*time.Minute)) {
			t.Errorf("%s: last use %v by %v", when, resp.Data["last_used_at"], resp.Data["last_used_by"])
		}
		callers := resp.Data["last_used_by_caller"].(map[string]string)
		want := map[string]string{
			"agent-a": formatTime(t0.Add(2 * time.Minute)),
			"agent-b": formatTime(t0.Add(time.Minute)),
			"agent-c": formatTime(t0.Add(-time.Hour)),
		}
		if fmt.Sprint(callers) != fmt.Sprint(want) {
			t.Errorf("%s: callers %v, want %v", when, callers, want)
		}
	}
	check("before the flush")
	if err := b.periodic(context.Background(), &logical.Request{Storage: s}); err != nil {
		t.Fatal(err)
	}
	check("after the flush")
	if len(b.lastUse.take()) != 0 {
		t.Error("uses still pending after the flush")
	}
}

func TestLastUseKeepsTheMostRecentCallers(t *testing.T) {
	u := lastUse{}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < maxCallersKept+10; i++ {
		at := base.Add(time.Duration(i) * time.Minute)
		u.merge(lastUse{At: at, By: fmt.Sprint("caller-", i), Callers: map[string]time.Time{fmt.Sprint("caller-", i): at}})
	}
	if len(u.Callers) != maxCallersKept {
		t.Fatalf("%d callers kept, want %d", len(u.Callers), maxCallersKept)
	}
	for i := 0; i < 10; i++ {
		if _, ok := u.Callers[fmt.Sprint("caller-", i)]; ok {
			t.Errorf("caller-%d, among the oldest, was kept", i)
		}
	}
	if u.By != fmt.Sprint("caller-", maxCallersKept+9) {
		t.Errorf("last caller %s", u.By)
	}
}

// TestTokenCallerLabels: a token without an entity is named so that an
// operator can tell which one called, not "token".
func TestTokenCallerLabels(t *testing.T) {
	for _, c := range []struct{ display, accessor, want string }{
		{"root", "hmac-acc", "root token"},
		{"token", "Yc2Lq8pZ3xT7", "token Yc2Lq8pZ…"},
		{"", "abc", "token abc…"},
		{"", "", "unknown"},
		{"token-second-agent", "Yc2Lq8pZ3xT7", "token-second-agent"},
	} {
		if got := tokenLabel(c.display, c.accessor); got != c.want {
			t.Errorf("tokenLabel(%q, %q) = %q, want %q", c.display, c.accessor, got, c.want)
		}
	}
}

// storedLastUse reads name's last use from storage, not memory.
func storedLastUse(t *testing.T, s logical.Storage, name string) time.Time {
	t.Helper()
	c, err := getCredential(context.Background(), s, name)
	if err != nil || c == nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return c.LastUsedAt
}

// TestLastUseReachesStorageWithinSeconds: a use is stored by the flusher
// without waiting for the periodic tick, and one still pending when the
// backend is cleaned up (reload, upgrade, seal, shutdown) is stored then.
func TestLastUseReachesStorageWithinSeconds(t *testing.T) {
	b, s, clock := getTestBackend(t)
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/k", apiKeyCred("")))
	b.startLastUseFlusher(s, 20*time.Millisecond)
	used := clock.now().Truncate(time.Second)
	b.lastUse.record("k", "agent-a", used)
	deadline := time.Now().Add(5 * time.Second)
	for !storedLastUse(t, s, "k").Equal(used) {
		if time.Now().After(deadline) {
			t.Fatal("the use was not stored by the flusher")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A long interval: only the cleanup can store the next use.
	b2, s2, clock2 := getTestBackend(t)
	mustOK(t, do(t, b2, s2, logical.CreateOperation, "creds/k", apiKeyCred("")))
	b2.startLastUseFlusher(s2, time.Hour)
	used = clock2.now().Truncate(time.Second)
	b2.lastUse.record("k", "agent-a", used)
	b2.Cleanup(context.Background())
	if got := storedLastUse(t, s2, "k"); !got.Equal(used) {
		t.Errorf("after cleanup the stored last use is %v, want %v", got, used)
	}
	b2.Cleanup(context.Background()) // a second cleanup is harmless
}
