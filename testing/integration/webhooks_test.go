package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/oauthserver"
	"github.com/clankteam/credentials/testing/webhookrecv"
)

// TestWebhooksFollowAnOAuthGrant: a receiver that checks signatures with
// Standard Webhooks' own library sees, in order, the events of a grant's
// life in a real Vault: connected; revoked at the fosite provider, so the
// next refresh fails (needs attention); reconnected (recovered); deleted.
// Then an agent made and removed: agent.created, agent.revoked. The
// engine's deliverer sends them by itself; no body or delivery log holds a
// token or the client secret.
func TestWebhooksFollowAnOAuthGrant(t *testing.T) {
	ctx := context.Background()
	org := newOrg(t, "webhooks")
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin)).Logical()
	member := vault.ClientWithToken(tokenFor(t, org, provision.RoleMember)).Logical()
	const clientSecret = "CANARY-webhooks-client-secret"
	idp, rec := providerForOrg(t, admin, mount, clientSecret)
	recv, err := webhookrecv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recv.Close)
	for _, w := range []struct {
		path string
		data map[string]interface{}
	}{
		{"webhooks/ops", map[string]interface{}{"url": recv.URL + "/credentials", "secret": recv.Secret}},
		{"creds/mail", map[string]interface{}{"type": "oauth2", "service": "idp", "app": "idp-app"}},
	} {
		if _, err := admin.WriteWithContext(ctx, mount+"/"+w.path, w.data); err != nil {
			t.Fatalf("writing %s: %v", w.path, err)
		}
	}
	// Members may not see or change the org's webhooks.
	_, err = member.ReadWithContext(ctx, mount+"/webhooks/ops")
	assertStatus(t, err, http.StatusForbidden, "permission denied")

	connect := func() {
		t.Helper()
		started, err := admin.WriteWithContext(ctx, mount+"/creds/mail/connect", map[string]interface{}{"replace": true})
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		back := authorizeAt(t, started.Data["auth_url"].(string))
		if _, err := admin.WriteWithContext(ctx, mount+"/creds/mail/callback", map[string]interface{}{"code": back.Get("code"), "state": back.Get("state")}); err != nil {
			t.Fatalf("callback: %v", err)
		}
	}
	connect()
	first := rec.last(t)
	recv.WaitFor(1, 30*time.Second)

	// The person removes the app's access at the provider: the next
	// refresh is refused with invalid_grant.
	idp.RevokeAll()
	if _, err := admin.WriteWithContext(ctx, mount+"/creds/mail/refresh", nil); err == nil {
		t.Fatal("a refresh of a grant revoked at the provider succeeded")
	}
	recv.WaitFor(2, 30*time.Second)
	connect()
	second := rec.last(t)
	recv.WaitFor(3, 30*time.Second)
	if _, err := admin.DeleteWithContext(ctx, mount+"/creds/mail"); err != nil {
		t.Fatal(err)
	}
	recv.WaitFor(4, 30*time.Second)
	// An agent made and removed through the portal's agent management.
	if _, err := admin.WriteWithContext(ctx, mount+"/creds/key", map[string]interface{}{"type": "api_key", "service": "openai", "api_key": "sk-webhooks-canary-0000000000"}); err != nil {
		t.Fatal(err)
	}
	recv.WaitFor(5, 30*time.Second)
	newAgent(t, org, provision.AgentSpec{Name: "hooked", Creds: []string{"key"}})
	recv.WaitFor(6, 30*time.Second)
	if err := provision.DeleteAgent(ctx, managerClient(t, org), org, "hooked"); err != nil {
		t.Fatal(err)
	}
	events := recv.WaitFor(7, 30*time.Second)

	want := []string{"credential.connected", "credential.needs_attention", "credential.recovered", "credential.deleted",
		"credential.connected", "agent.created", "agent.revoked"}
	if got := recv.Types(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("the receiver saw %v, want %v", got, want)
	}
	if n := recv.BadSignatures(); n != 0 {
		t.Errorf("%d deliveries failed the signature check", n)
	}
	if d := events[6].Data; d["agent"] != "hooked" || d["org"] != org {
		t.Errorf("the agent.revoked event: %v", d)
	}
	if d := events[1].Data; d["org"] != org || d["credential"] != "mail" || d["status"] != "needs_attention" || !strings.Contains(d["status_reason"], "invalid_grant") {
		t.Errorf("the needs-attention event: %v", d)
	}
	log, err := admin.ReadWithContext(ctx, mount+"/webhook-log")
	if err != nil {
		t.Fatal(err)
	}
	outputs := []string{toJSON(t, log.Data)}
	for _, e := range events {
		outputs = append(outputs, e.Body)
	}
	for _, secret := range []string{first.AccessToken, first.RefreshToken, second.AccessToken, second.RefreshToken, clientSecret, recv.Secret[6:], "sk-webhooks-canary-0000000000"} {
		for _, o := range outputs {
			if strings.Contains(o, secret) {
				t.Fatalf("a token or secret in a webhook body or the delivery log: %s", o)
			}
		}
	}
}

func toJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHealthCheckFlipsARefusedKey: the engine checks an API key by itself
// once it is stored (the checks wake; else their next pass, within 10 s);
// a local API answering 401 makes it need attention, and the org's
// webhook is told. No body holds the key.
func TestHealthCheckFlipsARefusedKey(t *testing.T) {
	ctx := context.Background()
	org := newOrg(t, "health")
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin)).Logical()
	const key = "sk-health-canary-5d4c3b2a1f0e"
	var checks atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		checks.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(api.Close)
	recv, err := webhookrecv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recv.Close)
	for _, w := range []struct {
		path string
		data map[string]interface{}
	}{
		{"config", map[string]interface{}{"health_check_interval": "24h"}},
		{"webhooks/ops", map[string]interface{}{"url": recv.URL, "secret": recv.Secret, "events": "credential.needs_attention"}},
		{"services/billing", map[string]interface{}{"types": "api_key", "base_urls": api.URL,
			"verify": map[string]interface{}{"method": "GET", "url": api.URL + "/v1/account", "expect_status": 200}}},
		{"creds/billing-key", map[string]interface{}{"type": "api_key", "service": "billing", "api_key": key}},
	} {
		if _, err := admin.WriteWithContext(ctx, mount+"/"+w.path, w.data); err != nil {
			t.Fatalf("writing %s: %v", w.path, err)
		}
	}
	events := recv.WaitFor(1, 30*time.Second)
	if len(events) != 1 || events[0].Type != "credential.needs_attention" || events[0].Data["credential"] != "billing-key" ||
		!strings.Contains(events[0].Data["status_reason"], "answered 401") {
		t.Fatalf("the webhook got %+v", events)
	}
	cred, err := admin.ReadWithContext(ctx, mount+"/creds/billing-key")
	if err != nil {
		t.Fatal(err)
	}
	if cred.Data["status"] != "needs_attention" {
		t.Fatalf("after the check: %v", cred.Data)
	}
	if n := checks.Load(); n != 1 {
		t.Errorf("the API was called %d times, want 1 (the next check is a day away)", n)
	}
	if strings.Contains(events[0].Body, key) || strings.Contains(toJSON(t, cred.Data), key) {
		t.Fatal("the key in the webhook body or the read")
	}
}

// providerForOrg starts an auto-approving fosite provider for org's
// mount: the portal's callback (an unreachable one: the tests follow the
// redirect themselves), service idp with RFC 7009 revocation and PKCE,
// and app idp-app, whose token endpoint is recorded.
func providerForOrg(t *testing.T, admin *api.Logical, mount, clientSecret string) (*oauthserver.Server, *tokenRecorder) {
	t.Helper()
	idp, err := oauthserver.Start(oauthserver.Options{AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	const redirect = "http://127.0.0.1:1/oauth/callback"
	if err := idp.AddClient("engine", clientSecret, []string{redirect}, nil); err != nil {
		t.Fatal(err)
	}
	rec := newTokenRecorder(t, idp)
	for _, w := range []struct {
		path string
		data map[string]interface{}
	}{
		{"config", map[string]interface{}{"redirect_url": redirect}},
		{"services/idp", map[string]interface{}{"types": "oauth2", "base_urls": idp.URL(), "oauth": map[string]interface{}{
			"auth_url": idp.AuthURL(), "token_url": rec.URL + "/token", "revoke_url": idp.RevokeURL(), "revoke_style": "rfc7009", "pkce": true}}},
		{"apps/idp-app", map[string]interface{}{"service": "idp", "client_id": "engine", "client_secret": clientSecret}},
	} {
		if _, err := admin.WriteWithContext(context.Background(), mount+"/"+w.path, w.data); err != nil {
			t.Fatalf("writing %s: %v", w.path, err)
		}
	}
	return idp, rec
}
