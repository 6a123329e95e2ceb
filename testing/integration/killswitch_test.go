package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
)

// TestKillSwitchStopsAgentsAndGrants: an org of 200 OAuth credentials
// connected at the fosite provider and 20 agents using them. Unconfirmed,
// the kill switch is refused and nothing changes; confirmed, every agent
// token is refused on its next call (Vault path and edge), its secret ID
// no longer logs in, every grant is inactive at the provider, and the job
// has 220 receipts, none with a secret in it.
func TestKillSwitchStopsAgentsAndGrants(t *testing.T) {
	const creds, agents = 200, 20
	ctx := context.Background()
	org := newOrg(t, "killswitch")
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin)).Logical()
	const clientSecret = "CANARY-killswitch-client-secret"
	idp, rec := providerForOrg(t, admin, mount, clientSecret)
	// 200 grants, connected 8 at a time.
	names := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range names {
				if _, err := admin.WriteWithContext(ctx, mount+"/creds/"+name, map[string]interface{}{"type": "oauth2", "service": "idp", "app": "idp-app"}); err != nil {
					t.Errorf("creating %s: %v", name, err)
					continue
				}
				started, err := admin.WriteWithContext(ctx, mount+"/creds/"+name+"/connect", nil)
				if err != nil {
					t.Errorf("connecting %s: %v", name, err)
					continue
				}
				back := authorizeAt(t, started.Data["auth_url"].(string))
				if _, err := admin.WriteWithContext(ctx, mount+"/creds/"+name+"/callback", map[string]interface{}{"code": back.Get("code"), "state": back.Get("state")}); err != nil {
					t.Errorf("callback of %s: %v", name, err)
				}
			}
		}()
	}
	for i := range creds {
		names <- fmt.Sprintf("grant-%03d", i)
	}
	close(names)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	grants := rec.all()
	if len(grants) != creds {
		t.Fatalf("%d grants issued, want %d", len(grants), creds)
	}

	type agent struct {
		name, cred, token string
		login             *provision.AgentLogin
	}
	var all []agent
	for i := range agents {
		a := agent{name: fmt.Sprintf("agent-%02d", i), cred: fmt.Sprintf("grant-%03d", i*10)}
		login, err := provision.CreateAgent(ctx, managerClient(t, org), org, provision.AgentSpec{Name: a.name, Creds: []string{a.cred}})
		if err != nil {
			t.Fatal(err)
		}
		a.login, a.token = login, agentLogin(t, login)
		all = append(all, a)
	}
	edge := startPortal(t)
	useVault := func(a agent) error {
		_, err := vault.ClientWithToken(a.token).Logical().WriteWithContext(ctx, mount+"/proxy/"+a.cred, map[string]interface{}{"method": "GET", "path": "/userinfo"})
		return err
	}
	useEdge := func(a agent) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, edge+"/broker/"+org+"/"+a.cred+"/userinfo", nil)
		req.Header.Set("Authorization", "Bearer "+a.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	everyoneWorks := func(when string) {
		t.Helper()
		for _, a := range all {
			if err := useVault(a); err != nil {
				t.Fatalf("%s: agent %s on the Vault path: %v", when, a.name, err)
			}
		}
		if s := useEdge(all[0]); s != http.StatusOK {
			t.Fatalf("%s: agent %s on the edge: HTTP %d", when, all[0].name, s)
		}
	}
	everyoneWorks("before the kill switch")

	// A person who is an admin and an agent manager of the org.
	tok, err := vault.Token(ctx, time.Hour, provision.AdminPolicy(org), provision.AgentsPolicy(org))
	if err != nil {
		t.Fatal(err)
	}
	person := vault.ClientWithToken(tok)

	// Unconfirmed: refused, nothing done, by the portal's part and the engine's.
	if _, _, err := provision.PullKillSwitch(ctx, person, org, provision.KillSwitch{Scope: "org", IncludeGrants: true, Confirm: "killswitc"}); !errors.Is(err, provision.ErrNotConfirmed) {
		t.Fatalf("an unconfirmed kill switch: %v", err)
	}
	_, err = person.Logical().WriteWithContext(ctx, mount+"/revoke-all", map[string]interface{}{"scope": "org", "include_grants": true})
	assertStatus(t, err, http.StatusBadRequest, "confirm")
	_, err = person.Logical().WriteWithContext(ctx, mount+"/revoke-all", map[string]interface{}{"scope": "org", "include_grants": true, "confirm": "other"})
	assertStatus(t, err, http.StatusBadRequest, "confirm must name the scope")
	everyoneWorks("after the refused kill switches")
	if idp.RevokeCalls() != 0 {
		t.Fatalf("a refused kill switch revoked %d tokens at the provider", idp.RevokeCalls())
	}

	id, receipts, err := provision.PullKillSwitch(ctx, person, org, provision.KillSwitch{Scope: "org", IncludeGrants: true, Confirm: org})
	if err != nil {
		t.Fatal(err)
	}
	if len(receipts) != agents {
		t.Fatalf("%d agent receipts, want %d", len(receipts), agents)
	}
	// Every agent token is refused on its next call, on both data paths.
	for _, a := range all {
		err := useVault(a)
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
			t.Errorf("agent %s after the kill switch: %v, want 403", a.name, err)
		}
	}
	if s := useEdge(all[0]); s != http.StatusForbidden {
		t.Errorf("agent %s on the edge after the kill switch: HTTP %d, want 403", all[0].name, s)
	}
	if _, err := vault.ClientWithToken("").Logical().WriteWithContext(ctx, "auth/approle/login", map[string]interface{}{
		"role_id": all[1].login.RoleID, "secret_id": all[1].login.SecretID,
	}); err == nil {
		t.Error("a stopped agent's secret ID still logs in")
	}

	var job *api.Secret
	deadline := time.Now().Add(3 * time.Minute)
	for {
		job, err = person.Logical().ReadWithContext(ctx, mount+"/revoke-all/"+id)
		if err != nil {
			t.Fatal(err)
		}
		if job.Data["state"] == "done" || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	items, _ := job.Data["items"].([]interface{})
	if job.Data["state"] != "done" || len(items) != creds+agents {
		t.Fatalf("job %s: state %v, %d receipts, want done and %d", id, job.Data["state"], len(items), creds+agents)
	}
	if n := fmt.Sprint(job.Data["revoked"]); n != fmt.Sprint(creds+agents) {
		t.Fatalf("%s receipts say revoked, want %d: %v", n, creds+agents, job.Data)
	}
	for _, g := range grants {
		if idp.Introspect(g.AccessToken) || idp.Introspect(g.RefreshToken) {
			t.Fatal("a grant is still active at the provider after the kill switch")
		}
	}
	listed := toJSON(t, job.Data)
	for _, a := range all {
		if !strings.Contains(listed, `"name":"`+a.name+`"`) {
			t.Errorf("no receipt for agent %s", a.name)
		}
	}
	for _, secret := range []string{clientSecret, grants[0].AccessToken, grants[0].RefreshToken, all[0].login.SecretID, all[0].token} {
		if strings.Contains(listed, secret) {
			t.Fatal("a secret in the kill switch's receipts")
		}
	}
	// The agents page shows them stopped.
	list, err := provision.ListAgents(ctx, person, org)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list {
		if !a.Stopped {
			t.Errorf("agent %s is not shown stopped", a.Name)
		}
	}
}
