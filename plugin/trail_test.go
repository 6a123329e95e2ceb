package credentials

import (
	"context"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clankteam/credentials/internal/contract"
)

func signTrail(key []byte, raw string) string {
	return hex.EncodeToString(contract.ReportMAC(key, contract.ReportTrail, raw))
}

// TestTrailReportsAreSignedAndChecked: a report whose mac is not the
// caller's trail key's is refused (an agent cannot write its own lines),
// and each bad line is named; a good report's lines are kept as sent.
func TestTrailReportsAreSignedAndChecked(t *testing.T) {
	b, s, _ := getTestBackend(t)
	key, err := b.trailKeyFor(context.Background(), s, "entity-a")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := b.trailKeyFor(context.Background(), s, "entity-b")
	if hmac.Equal(key, other) {
		t.Fatal("two entities share a trail key")
	}
	now := time.Now()
	good := fmt.Sprintf(`[{"at":%q,"ingress":"edge","credential":"stripe","method":"GET","path":"/v1/balance","status":200,"bytes":912,"duration_ms":41.2}]`, now.Format(time.RFC3339Nano))
	if _, err := parseTrailReport(good, signTrail(other, good), key, now); err == nil || !strings.Contains(err.Error(), "mac does not match") {
		t.Fatalf("a report signed with another entity's key: %v", err)
	}
	if _, err := parseTrailReport(good, "zz", key, now); err == nil {
		t.Fatal("a report with a mac that is not hex was taken")
	}
	for _, c := range []struct{ line, says string }{
		{`{"at":%q,"ingress":"carrier-pigeon","credential":"stripe","status":200}`, "ingress must be"},
		{`{"at":%q,"ingress":"edge","credential":"Not A Name","status":200}`, "credential"},
		{`{"at":%q,"ingress":"edge","credential":"stripe","method":"TRACE","path":"/","status":200}`, "method must be"},
		{`{"at":%q,"ingress":"edge","credential":"stripe","method":"GET","path":"/v1/x?key=sk_live_1","status":200}`, "no query"},
		{`{"at":%q,"ingress":"edge","credential":"stripe","status":-1}`, "not negative"},
	} {
		raw := "[" + fmt.Sprintf(c.line, now.Format(time.RFC3339Nano)) + "]"
		if _, err := parseTrailReport(raw, signTrail(key, raw), key, now); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want an error saying %q", raw, err, c.says)
		}
	}
	old := fmt.Sprintf(`[{"at":%q,"ingress":"edge","credential":"stripe","status":200}]`, now.Add(-2*time.Hour).Format(time.RFC3339Nano))
	if _, err := parseTrailReport(old, signTrail(key, old), key, now); err == nil || !strings.Contains(err.Error(), "within the last hour") {
		t.Fatalf("a line from two hours ago: %v", err)
	}
	lines, err := parseTrailReport(good, signTrail(key, good), key, now)
	if err != nil || len(lines) != 1 || lines[0].Path != "/v1/balance" || lines[0].Bytes != 912 {
		t.Fatalf("a good report: %v %v", lines, err)
	}
}

// TestTrailKeepsTheNewestCalls: an agent's trail is bounded, newest first,
// the same before and after it is stored, and per agent.
func TestTrailKeepsTheNewestCalls(t *testing.T) {
	b, s, _ := getTestBackend(t)
	ctx := context.Background()
	start := time.Now().UTC()
	for i := range maxTrailLines + 50 {
		b.trail.record("billing", trailLine{At: start.Add(time.Duration(i) * time.Millisecond), Ingress: "edge", Credential: "stripe",
			Method: "GET", Path: fmt.Sprintf("/v1/charges/%d", i), Status: 200})
		if i == 500 {
			if err := b.trail.flush(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.trail.record("support", trailLine{At: start, Ingress: "mail", Credential: "smtp", Status: 200})
	before, err := b.trailRead(ctx, s, "billing", maxTrailLines)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.trail.flush(ctx, s); err != nil {
		t.Fatal(err)
	}
	after, err := b.trailRead(ctx, s, "billing", maxTrailLines)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != maxTrailLines || after[0].Path != fmt.Sprintf("/v1/charges/%d", maxTrailLines+49) || after[len(after)-1].Path != "/v1/charges/50" {
		t.Fatalf("stored trail: %d lines, newest %s, oldest %s", len(after), after[0].Path, after[len(after)-1].Path)
	}
	if seqs, _ := trailChunks(ctx, s, "billing"); len(seqs) > maxTrailLines/trailChunk+1 {
		t.Errorf("the trail is kept in %d chunks, want at most %d", len(seqs), maxTrailLines/trailChunk+1)
	}
	rawBefore, _ := json.Marshal(before[:10])
	rawAfter, _ := json.Marshal(after[:10])
	if string(rawBefore) != string(rawAfter) {
		t.Fatal("the trail read before and after it was stored differ")
	}
	if sup, _ := b.trailRead(ctx, s, "support", 10); len(sup) != 1 || sup[0].Ingress != "mail" {
		t.Fatalf("another agent's trail: %v", sup)
	}
}
