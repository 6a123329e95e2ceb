package integration

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
)

// refusedByLimit says whether err is the engine's 429 naming limit.
func refusedByLimit(err error, limit string) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusTooManyRequests && strings.Contains(strings.Join(re.Errors, " "), "limit "+limit)
}

// TestOneLimitAcrossIngresses: one agent calling through the Vault path
// and the edges of two portals, in turn, takes from one limit: at
// most its count of calls reach the service, and past it every ingress
// answers 429 naming the limit (the edge with Retry-After), before the
// service sees anything.
func TestOneLimitAcrossIngresses(t *testing.T) {
	up := startFake(t)
	org := brokerOrg(t, "limits-mixed", up)
	ctx := context.Background()
	token := newAgent(t, org, provision.AgentSpec{Name: "busy", Creds: []string{"key-a"}})
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin)).Logical()
	if _, err := admin.WriteWithContext(ctx, contract.Mount(org)+"/limits/busy-rate", map[string]interface{}{
		"agent": "busy", "calls": 20, "period": "hour"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []map[string]interface{}{
		{"agent": "busy", "calls": 20, "usd": 5, "period": "hour"},
		{"agent": "busy", "calls": 20, "period": "fortnight"},
		{"agent": "Not An Agent", "calls": 20, "period": "hour"},
		{"usd": 5, "period": "minute"},
	} {
		_, err := admin.WriteWithContext(ctx, contract.Mount(org)+"/limits/bad", bad)
		assertStatus(t, err, http.StatusBadRequest, "")
	}
	first, second := startPortal(t), startPortal(t)
	cred := "/broker/" + org + "/key-a/v1/balance"
	ok, refused := 0, map[string]int{}
	for i := range 30 {
		switch i % 3 {
		case 0:
			_, err := viaVault(token, org, "key-a", map[string]interface{}{"method": "GET", "path": "/v1/balance"})
			switch {
			case err == nil:
				ok++
			case refusedByLimit(err, "busy-rate"):
				refused["vault"]++
			default:
				t.Fatalf("the Vault path: %v", err)
			}
		default:
			base := first
			if i%3 == 2 {
				base = second
			}
			status, header, body := viaPortal(t, base, token, "GET", cred, nil)
			switch {
			case status == http.StatusOK:
				ok++
			case status == http.StatusTooManyRequests && strings.Contains(string(body), "limit busy-rate") && header.Get("Retry-After") != "":
				refused["edge"]++
			default:
				t.Fatalf("the edge: HTTP %d %s", status, body)
			}
		}
	}
	served := len(up.Requests())
	t.Logf("%d of 30 calls went through a limit of 20; refused: %v", ok, refused)
	if ok != served {
		t.Errorf("%d calls answered 200 but the service saw %d", ok, served)
	}
	// Leases left unused are lost, never passed on: at most the limit,
	// and little below it.
	if ok > 20 || ok < 16 {
		t.Errorf("%d calls went through a limit of 20", ok)
	}
	if refused["vault"] == 0 || refused["edge"] == 0 {
		t.Errorf("refusals by ingress: %v; every ingress must be refused past the limit", refused)
	}
	// The count is stored: a reload of the engine does not reset it.
	if _, err := vault.Client().Logical().WriteWithContext(ctx, "sys/plugins/reload/backend", map[string]interface{}{"mounts": []string{contract.Mount(org) + "/"}}); err != nil {
		t.Fatal(err)
	}
	_, err := viaVault(token, org, "key-a", map[string]interface{}{"method": "GET", "path": "/v1/balance"})
	if !refusedByLimit(err, "busy-rate") {
		t.Errorf("after a reload the limit was reset: %v", err)
	}
	third := servePortal(t, portal.Config{}).URL()
	if status, _, _ := viaPortal(t, third, token, "GET", cred, nil); status != http.StatusTooManyRequests {
		t.Errorf("a new portal: HTTP %d, want 429", status)
	}
	read, err := admin.ReadWithContext(ctx, contract.Mount(org)+"/limits/busy-rate")
	if err != nil {
		t.Fatal(err)
	}
	if use := toJSON(t, read.Data["use"]); !strings.Contains(use, `"state":"reached"`) {
		t.Errorf("the limit's use reads %s", use)
	}
	// Another agent is not limited by busy's limit.
	other := newAgent(t, org, provision.AgentSpec{Name: "idle", Creds: []string{"key-a"}})
	if _, err := viaVault(other, org, "key-a", map[string]interface{}{"method": "GET", "path": "/v1/balance"}); err != nil {
		t.Errorf("another agent: %v", err)
	}
}
