package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/upstream"
)

// TestApprovalsInThePortal: a refund the credential's rules name is held
// at the edge (the service sees nothing) until alice approves it in
// chromium; then the same call goes through once, and the approval page
// records her. The same call replayed, or with another body, is refused;
// an agent waiting with Prefer: wait is let through when she approves; a
// denied call says so, with her reason.
func TestApprovalsInThePortal(t *testing.T) {
	ctx := context.Background()
	const key = "sk-approvals-CANARY-0123456789"
	up, err := upstream.Start(upstream.Options{Key: key, Record: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	mount := "orgs/" + org
	t.Cleanup(func() {
		_ = provision.DeleteAgent(ctx, st.root(), org, "refunder")
		_, _ = st.root().Logical().Delete(mount + "/approval-rules/payments")
		_, _ = st.root().Logical().Delete(mount + "/creds/payments")
		_, _ = st.root().Logical().Delete(mount + "/services/payments-api")
	})
	for _, w := range []struct {
		path string
		data map[string]any
	}{
		{mount + "/services/payments-api", map[string]any{"types": "api_key", "base_urls": up.URL}},
		{mount + "/creds/payments", map[string]any{"type": "api_key", "service": "payments-api", "api_key": key}},
		{mount + "/approval-rules/payments", map[string]any{"rules": "POST /echo/refunds"}},
	} {
		if _, err := st.root().Logical().Write(w.path, w.data); err != nil {
			t.Fatalf("writing %s: %v", w.path, err)
		}
	}
	login, err := provision.CreateAgent(ctx, st.root(), org, provision.AgentSpec{Name: "refunder", Creds: []string{"payments"}})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := st.vault.ClientWithToken("").Logical().Write("auth/approle/login", map[string]any{"role_id": login.RoleID, "secret_id": login.SecretID})
	if err != nil {
		t.Fatal(err)
	}
	token := sec.Auth.ClientToken
	type answer struct {
		status int
		body   map[string]any
	}
	call := func(body, approval, prefer string) answer {
		req, _ := http.NewRequest(http.MethodPost, st.url("/broker/"+org+"/payments/echo/refunds"), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		if approval != "" {
			req.Header.Set(contract.ApprovalHeader, approval)
		}
		if prefer != "" {
			req.Header.Set("Prefer", prefer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		a := answer{status: resp.StatusCode}
		_ = json.Unmarshal(raw, &a.body)
		return a
	}
	const refund = `{"charge":"ch_1","amount":100}`
	held := call(refund, "", "")
	id, _ := held.body["approval_id"].(string)
	link, _ := held.body["approval_url"].(string)
	if held.status != http.StatusAccepted || id == "" || !strings.HasPrefix(link, st.url("/orgs/"+org+"/approvals/")) {
		t.Fatalf("the held call: HTTP %d %v", held.status, held.body)
	}
	if n := len(up.Requests()); n != 0 {
		t.Fatalf("a held call reached the service (%d requests)", n)
	}
	if a := call(refund, id, ""); a.status != http.StatusConflict {
		t.Errorf("before a decision: HTTP %d %v", a.status, a.body)
	}

	b := newBrowser(t)
	signIn(t, b, adminUser, adminPass)
	b.click(`a[href$="/approvals"]`)
	if got := b.text("#approval-" + id); !strings.Contains(got, "POST /echo/refunds") || !strings.Contains(got, "refunder") || !strings.Contains(got, "pending") {
		t.Errorf("the queue shows %q", got)
	}
	b.check("approvals")
	b.navigate(link)
	if got := b.text("#approval-body"); !strings.Contains(got, `"amount":100`) {
		t.Errorf("the approval page shows the body %q", got)
	}
	b.check("approval")
	b.click("#approve")
	if got := b.text("#approval-state"); !strings.Contains(got, "approved by") || !strings.Contains(got, adminUser) {
		t.Errorf("after approving, the state reads %q", got)
	}

	if a := call(`{"charge":"ch_1","amount":100000}`, id, ""); a.status != http.StatusForbidden || !strings.Contains(a.body["error"].(map[string]any)["message"].(string), "not the one approved") {
		t.Errorf("changed arguments with the approval: HTTP %d %v", a.status, a.body)
	}
	if a := call(refund, id, ""); a.status != http.StatusOK {
		t.Fatalf("the approved call: HTTP %d %v", a.status, a.body)
	}
	if n := len(up.Requests()); n != 1 || !strings.Contains(string(up.Requests()[0].Body), `"amount":100`) {
		t.Fatalf("the service saw %d requests", n)
	}
	if a := call(refund, id, ""); a.status != http.StatusForbidden || !strings.Contains(a.body["error"].(map[string]any)["message"].(string), "used already") {
		t.Errorf("the approved call replayed: HTTP %d %v", a.status, a.body)
	}

	// An agent that waits is let through when alice approves.
	waited := make(chan answer, 1)
	go func() { waited <- call(`{"charge":"ch_2","amount":5}`, "", "wait=60") }()
	var second string
	deadline := time.Now().Add(30 * time.Second)
	for second == "" && time.Now().Before(deadline) {
		list, err := st.root().Logical().List(mount + "/approvals")
		if err == nil && list != nil {
			for k, v := range list.Data["key_info"].(map[string]any) {
				if v.(map[string]any)["state"] == "pending" {
					second = k
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if second == "" {
		t.Fatal("the waiting call was not held")
	}
	b.navigate(st.url("/orgs/" + org + "/approvals/" + second))
	b.click("#approve")
	select {
	case a := <-waited:
		if a.status != http.StatusOK {
			t.Errorf("the waiting call after approval: HTTP %d %v", a.status, a.body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting call was not let through")
	}

	// Denied, with the reason.
	const denied = `{"charge":"ch_3","amount":7}`
	third, _ := call(denied, "", "").body["approval_id"].(string)
	b.navigate(st.url("/orgs/" + org + "/approvals/" + third))
	b.do(chromedp.SetValue(chromedp.ID("reason"), "refunds go through finance"))
	b.click("#deny")
	if got := b.text("#approval-state"); !strings.Contains(got, "denied by") || !strings.Contains(got, adminUser) {
		t.Errorf("after denying, the state reads %q", got)
	}
	a := call(denied, third, "")
	if msg, _ := a.body["error"].(map[string]any)["message"].(string); a.status != http.StatusForbidden || !strings.Contains(msg, "denied by") || !strings.Contains(msg, "refunds go through finance") {
		t.Errorf("a denied call: HTTP %d %v", a.status, a.body)
	}
	if n := len(up.Requests()); n != 2 {
		t.Errorf("the service saw %d requests, want the 2 approved", n)
	}
	if bytes.Contains([]byte(b.html()), []byte(key)) {
		t.Error("the approval page shows the key")
	}
}
