package credentials

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/upstream"
)

func statusOf(t *testing.T, b *backend, s logical.Storage, name string) (string, string) {
	t.Helper()
	read := mustOK(t, do(t, b, s, logical.ReadOperation, "creds/"+name, nil))
	return read.Data["status"].(string), read.Data["status_reason"].(string)
}

func checkHealth(t *testing.T, b *backend, s logical.Storage) {
	t.Helper()
	if err := b.checkHealth(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// TestHealthChecksFollowTheSchedule: a key the service refuses needs
// attention after the first pass; it is not checked again before its time
// (interval plus its jitter); fixed, the next due pass makes it active. A
// service without a verify call, or a check turned off, calls nothing.
func TestHealthChecksFollowTheSchedule(t *testing.T) {
	b, s, clock := getTestBackend(t)
	up := startUpstream(t)
	localService(t, b, s, "checked", map[string]interface{}{
		"base_urls": up.URL,
		"verify":    map[string]interface{}{"method": "GET", "url": up.URL + "/v1/balance", "expect_status": 200},
	})
	localService(t, b, s, "unchecked", map[string]interface{}{"base_urls": up.URL})
	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"health_check_interval": "1h"}))
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/bad", map[string]interface{}{"type": "api_key", "service": "checked", "api_key": "sk_test_REFUSEDrefused000000000"}))
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/plain", map[string]interface{}{"type": "api_key", "service": "unchecked", "api_key": "sk_test_PLAINplain00000000000000"}))

	checkHealth(t, b, s)
	if st, reason := statusOf(t, b, s, "bad"); st != statusNeedsAttention || !strings.Contains(reason, "answered 401") {
		t.Fatalf("after a pass, the refused key is %s (%s)", st, reason)
	}
	calls := len(up.Requests())
	if calls != 1 {
		t.Fatalf("the pass made %d calls, want 1 (the service without verify is not called)", calls)
	}
	checkHealth(t, b, s)
	clock.advance(59 * time.Minute)
	checkHealth(t, b, s)
	if n := len(up.Requests()); n != calls {
		t.Fatalf("checked again before its time: %d calls", n-calls)
	}

	mustOK(t, do(t, b, s, logical.UpdateOperation, "creds/bad", map[string]interface{}{"api_key": brokerKey}))
	markNeedsAttention(t, b, s, "bad", verifyFailedPrefix+"stale")
	clock.advance(7 * time.Minute) // past 1h plus at most 6 minutes of jitter
	checkHealth(t, b, s)
	if st, _ := statusOf(t, b, s, "bad"); st != statusActive {
		t.Fatalf("after the due pass, the fixed key is %s", st)
	}

	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"health_check_interval": 0}))
	clock.advance(48 * time.Hour)
	calls = len(up.Requests())
	checkHealth(t, b, s)
	if n := len(up.Requests()); n != calls {
		t.Fatalf("checks turned off made %d calls", n-calls)
	}
	resp := do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"health_check_interval": "30s"})
	if !resp.IsError() || !strings.Contains(resp.Error().Error(), "at least 1m") {
		t.Fatalf("an interval under a minute: %v", resp)
	}
}

// TestHealthChecksAreBounded: a backlog is taken a pass's worth at a time,
// never more than healthConcurrent at once, under -race.
func TestHealthChecksAreBounded(t *testing.T) {
	b, s, _ := getTestBackend(t)
	up, err := upstream.Start(upstream.Options{Key: brokerKey, Record: true, Delay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	localService(t, b, s, "checked", map[string]interface{}{
		"base_urls": up.URL,
		"verify":    map[string]interface{}{"method": "GET", "url": up.URL + "/v1/balance", "expect_status": 200},
	})
	const n = healthPerPass + 8
	for i := range n {
		mustOK(t, do(t, b, s, logical.CreateOperation, fmt.Sprintf("creds/k%02d", i), map[string]interface{}{"type": "api_key", "service": "checked", "api_key": brokerKey}))
	}
	checkHealth(t, b, s)
	if got := len(up.Requests()); got != healthPerPass {
		t.Fatalf("the first pass checked %d, want %d", got, healthPerPass)
	}
	checkHealth(t, b, s)
	if got := len(up.Requests()); got != n {
		t.Fatalf("two passes checked %d, want %d", got, n)
	}
	if peak := up.PeakConcurrent(); peak > healthConcurrent {
		t.Fatalf("%d checks at once, want at most %d", peak, healthConcurrent)
	}
}
