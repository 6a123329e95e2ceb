package integration

import (
	"context"
	"errors"
	"fmt"
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

// TestSpendBudgetFromUsage: a day's budget in dollars, metered from the
// usage an LLM-like service reports (streamed events through one portal,
// a JSON answer through the Vault path, another through a second
// portal), warns at 80% and refuses the next call once spent, naming the
// budget; reloading the engine and calling through a new portal does not
// reset the spend.
func TestSpendBudgetFromUsage(t *testing.T) {
	up := startFake(t)
	org := newOrg(t, "limits-spend")
	ctx := context.Background()
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	write(t, admin, mount+"/services/llm", map[string]interface{}{
		"types": "api_key", "base_urls": up.URL,
		"pricing": map[string]interface{}{"fake-model": map[string]interface{}{"input_per_mtok": 1, "output_per_mtok": 10}},
	})
	write(t, admin, mount+"/creds/llm-key", map[string]interface{}{"type": "api_key", "service": "llm", "api_key": brokerKeyA})
	// Each answer reports 1000 input and 500 output tokens: $0.006.
	write(t, admin, mount+"/limits/llm-daily", map[string]interface{}{"credential": "llm-key", "usd": 0.015, "period": "day"})
	token := newAgent(t, org, provision.AgentSpec{Name: "writer", Creds: []string{"llm-key"}})
	first, second := startPortal(t), startPortal(t)
	path := "/broker/" + org + "/llm-key/v1/chat/completions"
	use := func() map[string]interface{} {
		t.Helper()
		s, err := admin.Logical().ReadWithContext(ctx, mount+"/limits/llm-daily")
		if err != nil {
			t.Fatal(err)
		}
		return s.Data["use"].([]interface{})[0].(map[string]interface{})
	}

	status, _, body := viaPortal(t, first, token, "POST", path+"?usage=1&gap_ms=1", []byte(`{"model":"fake-model-1","stream":true}`))
	if status != http.StatusOK || !strings.Contains(string(body), "[DONE]") {
		t.Fatalf("a streamed call: HTTP %d", status)
	}
	if u := use(); fmt.Sprint(u["usd"]) != "0.006" {
		t.Fatalf("after a streamed answer the spend is %v, want 0.006", u["usd"])
	}
	if _, err := viaVault(token, org, "llm-key", map[string]interface{}{"method": "POST", "path": "/v1/chat/completions?stream=false"}); err != nil {
		t.Fatalf("the Vault path: %v", err)
	}
	if u := use(); u["state"] != "warning" {
		t.Errorf("at $0.012 of $0.015 the limit reads %v, want warning", u)
	}
	if status, _, body := viaPortal(t, second, token, "POST", path+"?stream=false", nil); status != http.StatusOK {
		t.Fatalf("a JSON call through the second portal: HTTP %d %s", status, body)
	}
	// Spent: the next call is refused before the service sees it.
	before := len(up.Requests())
	status, header, body := viaPortal(t, first, token, "POST", path+"?stream=false", nil)
	if status != http.StatusTooManyRequests || !strings.Contains(string(body), "limit llm-daily ($0.015 a day) is reached") || header.Get("Retry-After") == "" {
		t.Fatalf("the call past the budget: HTTP %d %s", status, body)
	}
	if len(up.Requests()) != before {
		t.Fatal("a refused call reached the service")
	}
	if _, err := vault.Client().Logical().WriteWithContext(ctx, "sys/plugins/reload/backend", map[string]interface{}{"mounts": []string{mount + "/"}}); err != nil {
		t.Fatal(err)
	}
	_, err := viaVault(token, org, "llm-key", map[string]interface{}{"method": "POST", "path": "/v1/chat/completions?stream=false"})
	if !refusedByLimit(err, "llm-daily") {
		t.Errorf("after a reload: %v", err)
	}
	if status, _, _ := viaPortal(t, servePortal(t, portal.Config{}).URL(), token, "POST", path+"?stream=false", nil); status != http.StatusTooManyRequests {
		t.Errorf("through a new portal: HTTP %d, want 429", status)
	}
	if u := use(); u["state"] != "reached" || fmt.Sprint(u["usd"]) != "0.018" {
		t.Errorf("the limit reads %v", u)
	}
}
