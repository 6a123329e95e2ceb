package credentials

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/oauthserver"
)

// TestClientCredentialsGrant: an app with grant=client_credentials gives
// its credentials app-only tokens, minted on use against the real OAuth
// server and cached until shortly before they expire; there is nothing to
// connect.
func TestClientCredentialsGrant(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, map[string]interface{}{"token_auth_method": "client_secret_basic"})
	mustOK(t, do(t, f.b, f.s, logical.CreateOperation, "apps/graph", map[string]interface{}{
		"service": "idp", "client_id": testClientID, "client_secret": testClientSecret, "grant": "client_credentials",
	}))
	mustOK(t, do(t, f.b, f.s, logical.CreateOperation, "creds/app-only", map[string]interface{}{"type": "oauth2", "service": "idp", "app": "graph"}))
	read := mustOK(t, do(t, f.b, f.s, logical.ReadOperation, "creds/app-only", nil)).Data
	if read["status"] != statusActive || read["grant"] != "client_credentials" {
		t.Fatalf("a client credentials credential: %v (%v)", read["status"], read["status_reason"])
	}
	resp, _ := doErr(f.b, f.s, logical.UpdateOperation, "creds/app-only/connect", nil)
	if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "nothing to connect") {
		t.Fatalf("connect: %v", resp)
	}

	for i := 0; i < 3; i++ {
		status, _, _ := proxyOK(t, f.b, f.s, "app-only", map[string]interface{}{"method": "GET", "path": "/userinfo"})
		if status != 200 {
			t.Fatalf("call %d with the app token: HTTP %d", i, status)
		}
	}
	if n := f.srv.TokenCallsFor(oauthserver.GrantClientCredentials); n != 1 {
		t.Fatalf("%d client credentials grants for 3 calls, want 1 (cached)", n)
	}
	// Past the token's life (fosite's default hour), a new one is minted.
	f.clock.advance(56 * time.Minute)
	proxyOK(t, f.b, f.s, "app-only", map[string]interface{}{"method": "GET", "path": "/userinfo"})
	if n := f.srv.TokenCallsFor(oauthserver.GrantClientCredentials); n != 2 {
		t.Fatalf("%d grants after the token's life, want 2", n)
	}

	// The grant is fixed at the app's creation.
	resp, _ = doErr(f.b, f.s, logical.UpdateOperation, "apps/graph", map[string]interface{}{"grant": "authorization_code"})
	if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "grant cannot change") {
		t.Fatalf("changing the grant: %v", resp)
	}
}
