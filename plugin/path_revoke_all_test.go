package credentials

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/oauthserver"
)

// revokeAll writes revoke-all as Vault does, on the mount of org acme.
func revokeAll(t *testing.T, f *oauthFixture, data map[string]interface{}) *logical.Response {
	t.Helper()
	resp, err := f.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.UpdateOperation, Path: "revoke-all", Data: data, Storage: f.s, MountPoint: "orgs/acme/"})
	if err != nil && resp == nil {
		t.Fatal(err)
	}
	return resp
}

// TestRevokeAllNeedsItsConfirmation: a kill switch whose confirm does not
// name its scope, or that has nothing to do, is refused with a 400 that
// says why, and nothing is revoked or stored.
func TestRevokeAllNeedsItsConfirmation(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.writeService("idp", map[string]interface{}{"revoke_style": "rfc7009", "revoke_url": f.srv.RevokeURL()})
	f.connect("mail")
	for _, c := range []struct {
		desc string
		data map[string]interface{}
		says string
	}{
		{"no confirm", map[string]interface{}{"scope": "org", "include_grants": true}, "confirm"},
		{"confirm naming another org", map[string]interface{}{"scope": "org", "include_grants": true, "confirm": "other"}, "confirm must name the scope: confirm=acme"},
		{"confirm naming the org for a credential", map[string]interface{}{"scope": "credential", "credential": "mail", "include_grants": true, "confirm": "acme"}, "confirm=mail"},
		{"credential without grants", map[string]interface{}{"scope": "credential", "credential": "mail", "confirm": "mail"}, "include_grants=true is needed"},
		{"credential missing", map[string]interface{}{"scope": "credential", "credential": "nope", "include_grants": true, "confirm": "nope"}, "does not exist"},
		{"agent with grants", map[string]interface{}{"scope": "agent", "agent": "billing", "include_grants": true, "confirm": "billing"}, "an agent holds no grant"},
		{"nothing to do", map[string]interface{}{"scope": "org", "confirm": "acme"}, "portal's kill switch"},
		{"unknown scope", map[string]interface{}{"scope": "everything", "confirm": "acme"}, "scope"},
		{"bad receipts", map[string]interface{}{"scope": "org", "confirm": "acme", "agent_receipts": "{"}, "JSON list"},
		{"receipt of another agent", map[string]interface{}{"scope": "agent", "agent": "billing", "confirm": "billing",
			"agent_receipts": `[{"name":"support","outcome":"revoked"}]`}, "scope=agent is agent billing"},
		{"receipt with a made-up outcome", map[string]interface{}{"scope": "org", "confirm": "acme",
			"agent_receipts": `[{"name":"support","outcome":"vanished"}]`}, "outcome must be"},
	} {
		resp := revokeAll(t, f, c.data)
		if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), c.says) {
			t.Errorf("%s: got %v, want an error saying %q", c.desc, resp, c.says)
		}
	}
	if keys, _ := f.s.List(context.Background(), revokeJobPrefix); len(keys) != 0 {
		t.Fatalf("refused kill switches stored jobs %v", keys)
	}
	if !f.cred("mail").OAuth.Connected() || f.srv.RevokeCalls() != 0 {
		t.Fatal("a refused kill switch revoked the grant")
	}
}

// TestRevokeAllGivesAReceiptPerItem: the org's kill switch revokes each
// OAuth grant at the provider, says why an API key is not the engine's to
// revoke, keeps the agents' receipts the portal brought, and is readable
// by its ID.
func TestRevokeAllGivesAReceiptPerItem(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.writeService("idp", map[string]interface{}{"revoke_style": "rfc7009", "revoke_url": f.srv.RevokeURL()})
	f.connect("mail")
	f.connect("drive")
	f.createCred("never-connected")
	mustOK(t, do(t, f.b, f.s, logical.CreateOperation, "creds/key", map[string]interface{}{"type": "api_key", "service": "openai", "api_key": "sk-killswitch-canary-000000000000"}))
	tokens := []string{f.cred("mail").OAuth.AccessToken, f.cred("drive").OAuth.RefreshToken}

	resp := mustOK(t, revokeAll(t, f, map[string]interface{}{
		"scope": "org", "confirm": "acme", "include_grants": true,
		"agent_receipts": `[{"name":"billing","outcome":"revoked","detail":"entity disabled"}]`,
	}))
	id := resp.Data["job_id"].(string)
	if resp.Data["credentials"] != 4 || resp.Data["agents"] != 1 {
		t.Fatalf("the job takes %v credentials and %v agents, want 4 and 1", resp.Data["credentials"], resp.Data["agents"])
	}
	// Unit tests have no background storage: run the job here.
	if err := f.b.runRevokeJob(context.Background(), f.s, id); err != nil {
		t.Fatal(err)
	}
	job := mustOK(t, do(t, f.b, f.s, logical.ReadOperation, "revoke-all/"+id, nil)).Data
	if job["state"] != "done" || job["revoked"] != 3 || job["not_revocable"] != 2 || job["failed"] != 0 || job["pending"] != 0 {
		t.Fatalf("job: %v", job)
	}
	outcomes := map[string]string{}
	for _, it := range job["items"].([]interface{}) {
		m := it.(map[string]interface{})
		outcomes[m["kind"].(string)+" "+m["name"].(string)] = m["outcome"].(string) + ": " + m["detail"].(string)
	}
	for item, want := range map[string]string{
		"agent billing":              "revoked: entity disabled",
		"credential mail":            "revoked:",
		"credential drive":           "revoked:",
		"credential never-connected": "not_revocable: it holds no grant",
		"credential key":             "not_revocable: an API key is revoked at its service",
	} {
		if !strings.HasPrefix(outcomes[item], want) {
			t.Errorf("%s: %q, want %q…", item, outcomes[item], want)
		}
	}
	for _, tok := range tokens {
		if f.srv.Introspect(tok) {
			t.Error("a grant is still active at the provider after the kill switch")
		}
	}
	if f.cred("mail").OAuth.Connected() || f.cred("drive").OAuth.Connected() {
		t.Error("a revoked grant is still held")
	}
	raw, _ := json.Marshal(job)
	if s := string(raw); strings.Contains(s, "sk-killswitch-canary") || strings.Contains(s, tokens[0]) || strings.Contains(s, tokens[1]) {
		t.Fatalf("a secret in the job's receipts: %s", s)
	}
}
