package credentials

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// callErr is proxy/<name>'s error, whether a Go error or an error response.
func callErr(b *backend, s logical.Storage, name string, data map[string]interface{}) error {
	resp, err := proxyCall(b, s, name, data)
	if err == nil && resp != nil && resp.IsError() {
		err = resp.Error()
	}
	return err
}

func heldID(t *testing.T, err error) string {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), "approval required") {
		t.Fatalf("the call was not held: %v", err)
	}
	_, rest, _ := strings.Cut(err.Error(), "approval_id=")
	if len(rest) < 24 {
		t.Fatalf("no approval_id in %q", err)
	}
	return rest[:24]
}

// TestVaultPathCallsWaitForApproval: a call the credential's rules name is
// held (the service sees nothing) until a person approves it; then the
// same call goes through once. Changed arguments, a replay and a denied
// approval are refused, saying which; calls the rules do not name pass.
func TestVaultPathCallsWaitForApproval(t *testing.T) {
	b, s, up := brokerFixture(t)
	for _, c := range []struct {
		data map[string]interface{}
		says string
	}{
		{map[string]interface{}{"rules": "TRACE /v1"}, "the method must be"},
		{map[string]interface{}{"rules": "POST /v1/refunds?x=1"}, "without the query"},
		{map[string]interface{}{"rules": "POST /v1/refunds", "ttl": "10s"}, "ttl must be 1m to 24h"},
		{map[string]interface{}{"rules": "POST /v1/refunds", "agents": "Not An Agent"}, "not an agent name"},
	} {
		if resp := do(t, b, s, logical.CreateOperation, "approval-rules/key", c.data); !resp.IsError() || !strings.Contains(resp.Error().Error(), c.says) {
			t.Errorf("%v: %v, want an error saying %q", c.data, resp, c.says)
		}
	}
	if resp := do(t, b, s, logical.CreateOperation, "approval-rules/nobody", map[string]interface{}{"rules": "POST /x"}); !resp.IsError() {
		t.Error("approval rules for a credential that does not exist were stored")
	}
	mustOK(t, do(t, b, s, logical.CreateOperation, "approval-rules/key", map[string]interface{}{"rules": "POST /echo/refunds/*"}))

	body := base64.StdEncoding.EncodeToString([]byte(`{"charge":"ch_1","amount":100}`))
	refund := map[string]interface{}{"method": "POST", "path": "/echo/refunds/ch_1?expand=charge", "body": body}
	err := callErr(b, s, "key", refund)
	id := heldID(t, err)
	if n := len(up.Requests()); n != 0 {
		t.Fatalf("a held call reached the service (%d requests)", n)
	}
	read := mustOK(t, do(t, b, s, logical.ReadOperation, "approvals/"+id, nil)).Data
	if read["state"] != "pending" || read["call"] != "POST /echo/refunds/ch_1?expand=charge" || !strings.Contains(read["preview"].(string), `"amount":100`) {
		t.Fatalf("the approval reads %v", read)
	}
	with := func(extra map[string]interface{}) map[string]interface{} {
		out := map[string]interface{}{"approval_id": id}
		for k, v := range refund {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	if err := callErr(b, s, "key", with(nil)); err == nil || !strings.Contains(err.Error(), "not decided yet") {
		t.Fatalf("before a decision: %v", err)
	}
	decided := mustOK(t, do(t, b, s, logical.UpdateOperation, "approvals/"+id+"/approve", nil)).Data
	if decided["state"] != "approved" || decided["decided_by"] == "" {
		t.Fatalf("approving: %v", decided)
	}
	if resp := do(t, b, s, logical.UpdateOperation, "approvals/"+id+"/deny", nil); !resp.IsError() || !strings.Contains(resp.Error().Error(), "approved already") {
		t.Fatalf("deciding twice: %v", resp)
	}
	changedBody := with(map[string]interface{}{"body": base64.StdEncoding.EncodeToString([]byte(`{"charge":"ch_1","amount":100000}`))})
	changedQuery := with(map[string]interface{}{"path": "/echo/refunds/ch_1?expand=customer"})
	for what, call := range map[string]map[string]interface{}{"another body": changedBody, "another query": changedQuery} {
		if err := callErr(b, s, "key", call); err == nil || !strings.Contains(err.Error(), "is not the one approved") {
			t.Errorf("%s with the approval: %v", what, err)
		}
	}
	if status, _, _ := proxyOK(t, b, s, "key", with(nil)); status != 200 {
		t.Fatalf("the approved call: HTTP %d", status)
	}
	if n := len(up.Requests()); n != 1 {
		t.Fatalf("the service saw %d requests, want the approved one", n)
	}
	if err := callErr(b, s, "key", with(nil)); err == nil || !strings.Contains(err.Error(), "used already") {
		t.Fatalf("a replay: %v", err)
	}

	// Denied, with the reason told.
	err = callErr(b, s, "key", refund)
	second := heldID(t, err)
	mustOK(t, do(t, b, s, logical.UpdateOperation, "approvals/"+second+"/deny", map[string]interface{}{"reason": "refunds go through finance"}))
	refund["approval_id"] = second
	if err := callErr(b, s, "key", refund); err == nil || !strings.Contains(err.Error(), "denied by") || !strings.Contains(err.Error(), "refunds go through finance") {
		t.Fatalf("a denied call: %v", err)
	}
	// Calls the rules do not name are not held.
	if status, _, _ := proxyOK(t, b, s, "key", map[string]interface{}{"method": "GET", "path": "/v1/balance"}); status != 200 {
		t.Fatalf("a call no rule names: HTTP %d", status)
	}
	list := mustOK(t, do(t, b, s, logical.ListOperation, "approvals/", nil)).Data
	if keys := list["keys"].([]string); len(keys) != 2 {
		t.Fatalf("listed %v", keys)
	}
}
