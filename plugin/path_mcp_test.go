package credentials

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
)

const (
	mcpCanarySecretID = "secret-id-CANARY-7c1f0e"
	mcpTestClient     = "https://client.example.test/oauth/client.json"
	mcpTestRedirect   = "http://127.0.0.1:33418/callback"
	mcpTestResource   = "https://portal.example.test/mcp/acme"
	mcpTestVerifier   = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-verifier"
)

func pkceChallenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// mcpFixture is a backend with an edge key, to open the sealed logins.
type mcpFixture struct {
	t     *testing.T
	b     *backend
	s     logical.Storage
	clock *testClock
	edge  *egress.EdgePrivateKey
}

func newMCPFixture(t *testing.T) *mcpFixture {
	b, s, clock := getTestBackend(t)
	privLine, pubLine, err := egress.GenerateEdgeKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := egress.ParseEdgePublicKeys(pubLine)
	if err != nil {
		t.Fatal(err)
	}
	b.egress.edgeKeys = pub
	priv, err := egress.ParseEdgePrivateKey(privLine)
	if err != nil {
		t.Fatal(err)
	}
	return &mcpFixture{t: t, b: b, s: s, clock: clock, edge: priv}
}

// approve writes a grant as the portal does when a person approves, and
// returns its code.
func (f *mcpFixture) approve(id string) string {
	f.t.Helper()
	code := id + ".code-" + id[:8]
	mustOK(f.t, do(f.t, f.b, f.s, logical.CreateOperation, "mcp/grants/"+id, map[string]interface{}{
		"agent": "assistant", "client_id": mcpTestClient, "client_name": "Test Client",
		"redirect_uri": mcpTestRedirect, "resource": mcpTestResource, "scope": "mcp",
		"role_id": "role-1", "secret_id": mcpCanarySecretID, "secret_id_accessor": "sid-acc-1",
		"code_hash": tokenHash(code), "code_challenge": pkceChallenge(mcpTestVerifier),
	}))
	return code
}

func (f *mcpFixture) redeem(code, verifier string) *logical.Response {
	f.t.Helper()
	return do(f.t, f.b, f.s, logical.UpdateOperation, "mcp/token", map[string]interface{}{
		"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
		"redirect_uri": mcpTestRedirect, "client_id": mcpTestClient, "resource": mcpTestResource,
		"edge_key": f.edge.ID,
	})
}

func (f *mcpFixture) refresh(rt string) *logical.Response {
	f.t.Helper()
	return do(f.t, f.b, f.s, logical.UpdateOperation, "mcp/token", map[string]interface{}{
		"grant_type": "refresh_token", "refresh_token": rt, "client_id": mcpTestClient, "edge_key": f.edge.ID,
	})
}

func TestMCPGrantWritesAreChecked(t *testing.T) {
	f := newMCPFixture(t)
	good := func() map[string]interface{} {
		return map[string]interface{}{
			"agent": "assistant", "client_id": mcpTestClient, "client_name": "Test Client",
			"redirect_uri": mcpTestRedirect, "resource": mcpTestResource,
			"role_id": "role-1", "secret_id": mcpCanarySecretID, "secret_id_accessor": "sid-acc-1",
			"code_hash": tokenHash("x"), "code_challenge": pkceChallenge(mcpTestVerifier),
		}
	}
	id := "0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		path   string
		change func(map[string]interface{})
		want   string
	}{
		{"mcp/grants/not-hex", nil, "32 lowercase hex"},
		{"mcp/grants/" + id, func(m map[string]interface{}) { delete(m, "agent") }, "agent is required"},
		{"mcp/grants/" + id, func(m map[string]interface{}) { m["client_name"] = "a\x00b" }, "client_name is required"},
		{"mcp/grants/" + id, func(m map[string]interface{}) { m["code_hash"] = "abc" }, "code_hash must be the SHA-256"},
		{"mcp/grants/" + id, func(m map[string]interface{}) { m["code_challenge"] = "plain-challenge" }, "PKCE S256"},
		{"mcp/grants/" + id, func(m map[string]interface{}) { m["code_ttl"] = "1h" }, "code_ttl must be between"},
		{"mcp/grants/" + id, func(m map[string]interface{}) { m["color"] = "blue" }, "unknown field"},
	} {
		data := good()
		if tc.change != nil {
			tc.change(data)
		}
		wantError(t, do(t, f.b, f.s, logical.CreateOperation, tc.path, data), tc.want)
	}
	if ids, _ := f.s.List(t.Context(), mcpGrantPrefix); len(ids) != 0 {
		t.Fatalf("refused writes stored grants: %v", ids)
	}
	f.approve(id)
	wantError(t, do(t, f.b, f.s, logical.CreateOperation, "mcp/grants/"+id, good()), "a grant is written once")

	// Reads and lists show no secret and no hash.
	for _, resp := range []*logical.Response{
		do(t, f.b, f.s, logical.ReadOperation, "mcp/grants/"+id, nil),
		do(t, f.b, f.s, logical.ListOperation, "mcp/grants/", nil),
	} {
		out := fmt.Sprint(resp.Data)
		if strings.Contains(out, mcpCanarySecretID) || strings.Contains(out, "role-1") || strings.Contains(out, pkceChallenge(mcpTestVerifier)) {
			t.Fatalf("a grant's read shows a secret: %s", out)
		}
	}
	if got := do(t, f.b, f.s, logical.ReadOperation, "mcp/grants/"+id, nil).Data["state"]; got != "pending" {
		t.Fatalf("state = %v before the code is redeemed", got)
	}
}

func TestMCPCodeAndRefreshTokens(t *testing.T) {
	f := newMCPFixture(t)
	id := "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	code := f.approve(id)

	wantError(t, f.redeem(code, strings.Repeat("w", 43)), "code_verifier does not match")
	wantError(t, f.redeem(id+".guess", mcpTestVerifier), "not this grant's")
	wantError(t, do(t, f.b, f.s, logical.UpdateOperation, "mcp/token", map[string]interface{}{
		"grant_type": "authorization_code", "code": code, "code_verifier": mcpTestVerifier,
		"redirect_uri": "http://127.0.0.1:9/other", "client_id": mcpTestClient, "edge_key": f.edge.ID,
	}), "redirect_uri is not")
	wantError(t, do(t, f.b, f.s, logical.UpdateOperation, "mcp/token", map[string]interface{}{
		"grant_type": "authorization_code", "code": code, "code_verifier": mcpTestVerifier,
		"redirect_uri": mcpTestRedirect, "client_id": mcpTestClient, "resource": "https://portal.example.test/mcp/other", "edge_key": f.edge.ID,
	}), "invalid_target")

	resp := mustOK(t, f.redeem(code, mcpTestVerifier))
	rt := resp.Data["refresh_token"].(string)
	if !strings.HasPrefix(rt, id+".") || resp.Data["agent"] != "assistant" {
		t.Fatalf("redeem answered %v", resp.Data)
	}
	if strings.Contains(fmt.Sprint(resp.Data), mcpCanarySecretID) {
		t.Fatal("the secret ID is in the answer in the clear")
	}
	var login egress.MCPLogin
	if err := f.edge.OpenFor(egress.MCPLoginInfo("", id), resp.Data[egress.FieldSealed].(string), &login); err != nil {
		t.Fatal(err)
	}
	if login.RoleID != "role-1" || login.SecretID != mcpCanarySecretID {
		t.Fatalf("the sealed login is %+v", login)
	}
	if f.edge.OpenFor(egress.MCPLoginInfo("", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), resp.Data[egress.FieldSealed].(string), &login) == nil {
		t.Fatal("a login sealed for one grant opens as another's")
	}

	// Each refresh rotates the token.
	rt2 := mustOK(t, f.refresh(rt)).Data["refresh_token"].(string)
	if rt2 == rt {
		t.Fatal("the refresh token did not rotate")
	}
	// The accessor of a minted token is recorded with the current token
	// only, and disconnect answers it while it lives.
	wantError(t, do(t, f.b, f.s, logical.UpdateOperation, "mcp/token/issued", map[string]interface{}{
		"refresh_token": rt, "accessor": "acc-old", "expires_at": f.clock.now().Add(15 * time.Minute).Format(time.RFC3339),
	}), "not this grant's current one")
	mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "mcp/token/issued", map[string]interface{}{
		"refresh_token": rt2, "accessor": "acc-1", "expires_at": f.clock.now().Add(15 * time.Minute).Format(time.RFC3339),
	}))

	// The spent token presented again ends the grant: the current one
	// stops working too.
	wantError(t, f.refresh(rt), "already used; the grant is ended")
	wantError(t, f.refresh(rt2), "the grant ended")
	if got := do(t, f.b, f.s, logical.ReadOperation, "mcp/grants/"+id, nil).Data["state"]; got != "ended" {
		t.Fatalf("state after a replay = %v", got)
	}

	del := mustOK(t, do(t, f.b, f.s, logical.DeleteOperation, "mcp/grants/"+id, nil))
	if fmt.Sprint(del.Data["token_accessors"]) != "[acc-1]" || del.Data["secret_id_accessor"] != "sid-acc-1" {
		t.Fatalf("delete answered %v", del.Data)
	}
	wantError(t, f.refresh(rt2), "disconnected")
}

func TestMCPCodeIsSingleUseAndExpires(t *testing.T) {
	f := newMCPFixture(t)
	id := "cccccccccccccccccccccccccccccccc"
	code := f.approve(id)
	rt := mustOK(t, f.redeem(code, mcpTestVerifier)).Data["refresh_token"].(string)
	// A code presented twice may be in the wrong hands: the grant ends.
	wantError(t, f.redeem(code, mcpTestVerifier), "already used")
	wantError(t, f.refresh(rt), "the grant ended")

	late := "dddddddddddddddddddddddddddddddd"
	code = f.approve(late)
	f.clock.advance(61 * time.Second)
	wantError(t, f.redeem(code, mcpTestVerifier), "the code expired")
}
