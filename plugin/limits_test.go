package credentials

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestPeriodsStartInUTC(t *testing.T) {
	at := time.Date(2026, 12, 6, 22, 45, 30, 500, time.UTC) // a Sunday
	for period, want := range map[string]string{
		"second": "2026-12-06T22:45:30Z", "minute": "2026-12-06T22:45:00Z", "hour": "2026-12-06T22:00:00Z",
		"day": "2026-12-06T00:00:00Z", "week": "2026-11-30T00:00:00Z", "month": "2026-12-01T00:00:00Z",
	} {
		if got := periodStart(period, at).Format(time.RFC3339); got != want {
			t.Errorf("%s: %s, want %s", period, got, want)
		}
	}
	if end := periodEnd("month", periodStart("month", at)); end.Format(time.RFC3339) != "2027-01-01T00:00:00Z" {
		t.Errorf("the month ends %s", end)
	}
}

// TestLimitsLeaseAndRefuse: leases shrink near a limit and never pass
// it; each agent of agent=* has its own count; past the limit the refusal
// names it and says when to retry; a new period starts over.
func TestLimitsLeaseAndRefuse(t *testing.T) {
	b, s, clock := getTestBackend(t)
	ctx := context.Background()
	mustOK(t, do(t, b, s, logical.CreateOperation, "limits/each", map[string]interface{}{"agent": "*", "calls": 10, "period": "minute"}))
	for _, bad := range []map[string]interface{}{
		{"calls": 10, "period": "minute", "agent": "No Agent"},
		{"calls": 10, "usd": 1, "period": "day"},
		{"period": "day"},
		{"calls": -1, "period": "day"},
	} {
		if resp := do(t, b, s, logical.CreateOperation, "limits/bad", bad); !resp.IsError() {
			t.Errorf("%v was stored", bad)
		}
	}
	var total int64
	var grants []int64
	for {
		g, err := b.takeCalls(ctx, s, "billing", "key", 32)
		if err != nil {
			if !strings.Contains(err.Error(), "limit each (10 calls a minute) is reached: retry after") {
				t.Fatalf("the refusal: %v", err)
			}
			break
		}
		grants = append(grants, g)
		total += g
	}
	if total != 10 || grants[0] != 2 || grants[len(grants)-1] != 1 {
		t.Fatalf("leases %v (%d calls), want shrinking leases of 10 calls in all", grants, total)
	}
	if w, r := b.limitStates(); w != 0 || r != 1 {
		t.Errorf("the metrics count %v limits at warning and %v reached, want 0 and 1", w, r)
	}
	if g, err := b.takeCalls(ctx, s, "support", "key", 1); err != nil || g != 1 {
		t.Fatalf("another agent: %d %v", g, err)
	}
	if g, err := b.takeCalls(ctx, s, "", "key", 5); err != nil || g != 5 {
		t.Fatalf("a caller that is no agent is not under agent=*: %d %v", g, err)
	}
	clock.advance(time.Minute)
	if _, err := b.takeCalls(ctx, s, "billing", "key", 1); err != nil {
		t.Fatalf("in the next minute: %v", err)
	}
}
