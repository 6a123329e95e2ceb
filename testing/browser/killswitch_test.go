package browser

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/clankteam/credentials/portal/provision"
)

// TestKillSwitchInThePortal: an agent's edge calls show on its Trail page
// and in the export; the kill switch, unconfirmed, stops nothing; confirmed
// for the agent, its next call is refused and the Agents page marks it
// stopped; for a credential, the job page shows the grant revoked at the
// provider.
func TestKillSwitchInThePortal(t *testing.T) {
	ctx := context.Background()
	const cred, agentName = "killed-mail", "runaway"
	t.Cleanup(func() {
		_ = provision.DeleteAgent(ctx, st.root(), org, agentName)
		_, _ = st.root().Logical().Delete("orgs/" + org + "/creds/" + cred)
	})
	b := newBrowser(t)
	signIn(t, b, adminUser, adminPass)
	b.navigate(st.url("/orgs/" + org + "/add/" + oauthService))
	b.do(chromedp.SetValue(chromedp.ID("name"), cred))
	b.click("#save")
	b.click("#allow")
	if got := b.text(".flash"); !strings.Contains(got, "Connected "+cred) {
		t.Fatalf("after connecting, the message is %q", got)
	}

	login, err := provision.CreateAgent(ctx, st.root(), org, provision.AgentSpec{Name: agentName, Creds: []string{cred}})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := st.vault.ClientWithToken("").Logical().Write("auth/approle/login", map[string]any{"role_id": login.RoleID, "secret_id": login.SecretID})
	if err != nil {
		t.Fatal(err)
	}
	token := sec.Auth.ClientToken
	call := func() int {
		req, _ := http.NewRequest(http.MethodGet, st.url("/broker/"+org+"/"+cred+"/userinfo?trace=CANARY-query"), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := call(); s != http.StatusOK {
		t.Fatalf("the agent's call: HTTP %d", s)
	}

	// Its trail, once the edge has reported the call.
	deadline := time.Now().Add(20 * time.Second)
	for {
		b.navigate(st.url("/orgs/" + org + "/agents/" + agentName + "/trail"))
		if b.count("#trail tbody tr") > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if got := b.text("#trail tbody tr:first-child"); !strings.Contains(got, "GET /userinfo") || !strings.Contains(got, "200") || !strings.Contains(got, "edge") {
		t.Fatalf("the trail's newest call reads %q", got)
	}
	if strings.Contains(b.html(), "CANARY-query") {
		t.Error("the trail page shows the call's query")
	}
	b.check("trail")
	resp, err := portalClient(t, adminUser, adminPass).Get(st.url("/orgs/" + org + "/agents/" + agentName + "/trail.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	export, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(export), `"path":"/userinfo"`) || strings.Count(string(export), "\n") < 1 {
		t.Errorf("the export: HTTP %d %q", resp.StatusCode, export)
	}

	// Unconfirmed: nothing is stopped.
	b.click(`a[href$="/kill-switch"]`)
	b.check("kill-switch")
	b.do(
		chromedp.Click(chromedp.ID("scope-agent")),
		chromedp.SetValue(chromedp.ID("agent"), agentName),
		chromedp.SetValue(chromedp.ID("confirm"), "runawa"),
	)
	b.click("#pull")
	if got := b.text("#form-error"); !strings.Contains(got, "Nothing was revoked") || !strings.Contains(got, "type "+agentName) {
		t.Errorf("an unconfirmed kill switch says %q", got)
	}
	if s := call(); s != http.StatusOK {
		t.Fatalf("after an unconfirmed kill switch the agent's call: HTTP %d", s)
	}

	// The agent.
	b.do(
		chromedp.Click(chromedp.ID("scope-agent")),
		chromedp.SetValue(chromedp.ID("agent"), agentName),
		chromedp.SetValue(chromedp.ID("confirm"), agentName),
	)
	b.click("#pull")
	if got := b.text("#receipts"); !strings.Contains(got, "agent "+agentName) || !strings.Contains(got, "revoked") || !strings.Contains(got, "entity disabled") {
		t.Errorf("the job's receipts read %q", got)
	}
	b.check("kill-switch-job")
	if s := call(); s != http.StatusForbidden {
		t.Errorf("after the kill switch the agent's call: HTTP %d, want 403", s)
	}
	b.navigate(st.url("/orgs/" + org + "/agents"))
	if b.count("#stopped-"+agentName) != 1 {
		t.Errorf("the agents page does not mark %s stopped", agentName)
	}

	// The credential's grant.
	b.navigate(st.url("/orgs/" + org + "/kill-switch"))
	b.do(
		chromedp.Click(chromedp.ID("scope-credential")),
		chromedp.SetValue(chromedp.ID("credential"), cred),
		chromedp.SetValue(chromedp.ID("confirm"), cred),
	)
	b.click("#pull")
	deadline = time.Now().Add(20 * time.Second)
	for strings.Contains(b.text("#job-state"), "running") && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		b.navigate(b.location())
	}
	if got := b.text("#receipts"); !strings.Contains(got, "credential "+cred) || !strings.Contains(got, "revoked at the provider") {
		t.Errorf("the credential's receipt reads %q", got)
	}
	if d, err := st.root().Logical().Read("orgs/" + org + "/creds/" + cred); err != nil || d.Data["status"] != "disconnected" {
		t.Errorf("after the kill switch the credential is %v (%v)", d, err)
	}
}
