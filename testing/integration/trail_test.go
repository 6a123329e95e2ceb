package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
)

// TestAgentTrailRecordsEveryCall: an agent's calls on the edge and the
// Vault path show in its trail, with method, path (no query), status and
// bytes; the agent cannot write lines itself; nothing secret is kept.
func TestAgentTrailRecordsEveryCall(t *testing.T) {
	up := startFake(t)
	org := brokerOrg(t, "trail", up)
	ctx := context.Background()
	token := newAgent(t, org, provision.AgentSpec{Name: "traced", Creds: []string{"key-a"}})
	base := startPortal(t)
	cred := "/broker/" + org + "/key-a"
	const canaryQuery = "CANARY-trail-query-value"

	if status, _, _ := viaPortal(t, base, token, "GET", cred+"/v1/balance?expand="+canaryQuery, nil); status != http.StatusOK {
		t.Fatalf("edge call: HTTP %d", status)
	}
	if status, _, _ := viaPortal(t, base, token, "POST", cred+"/echo/charges", []byte(`{"amount":100}`)); status != http.StatusOK {
		t.Fatalf("edge call: HTTP %d", status)
	}
	if status, _, _ := viaPortal(t, base, token, "GET", cred+"/v1/missing", nil); status != http.StatusNotFound {
		t.Fatalf("edge call to a missing path: HTTP %d", status)
	}
	if _, err := viaVault(token, org, "key-a", map[string]interface{}{"method": "GET", "path": "/v1/balance"}); err != nil {
		t.Fatal(err)
	}

	// The agent writing its own lines, with a made-up signature.
	_, err := vault.ClientWithToken(token).Logical().WriteWithContext(ctx, contract.Mount(org)+"/trail-report", map[string]interface{}{
		"lines": `[{"at":"` + time.Now().UTC().Format(time.RFC3339) + `","ingress":"edge","credential":"key-a","method":"GET","path":"/v1/innocent","status":200}]`,
		"mac":   strings.Repeat("ab", 32),
	})
	assertStatus(t, err, http.StatusForbidden, "mac does not match")

	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin)).Logical()
	type line struct {
		Ingress, Credential, Method, Path string
		Status                            int
		Bytes                             int64
	}
	var calls []line
	var raw string
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := admin.ReadWithContext(ctx, contract.Mount(org)+"/agents/traced/trail")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(s.Data["calls"])
		raw = string(b)
		calls = nil
		if err := json.Unmarshal(b, &calls); err != nil {
			t.Fatal(err)
		}
		if len(calls) >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	seen := map[string]line{}
	for _, c := range calls {
		seen[c.Ingress+" "+c.Method+" "+c.Path] = c
	}
	if len(calls) != 4 {
		t.Fatalf("the trail has %d calls, want 4: %s", len(calls), raw)
	}
	for key, status := range map[string]int{
		"edge GET /v1/balance": 200, "edge POST /echo/charges": 200, "edge GET /v1/missing": 404, "vault GET /v1/balance": 200,
	} {
		c, ok := seen[key]
		if !ok || c.Status != status || c.Credential != "key-a" {
			t.Errorf("%s: %+v (ok %v), want status %d", key, c, ok, status)
		}
	}
	if seen["edge GET /v1/balance"].Bytes == 0 {
		t.Error("an edge call's bytes were not counted")
	}
	for _, secret := range []string{canaryQuery, brokerKeyA, token, "innocent"} {
		if strings.Contains(raw, secret) {
			t.Fatalf("the trail holds %q: %s", secret, raw)
		}
	}
	// Another org's admin cannot read it.
	other := newOrg(t, "trail-other")
	_, err = vault.ClientWithToken(tokenFor(t, other, provision.RoleAdmin)).Logical().ReadWithContext(ctx, contract.Mount(org)+"/agents/traced/trail")
	assertStatus(t, err, http.StatusForbidden, "permission denied")
}
