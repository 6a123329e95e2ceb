package credentials

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/oauthserver"
)

// TestDisconnectRevokesAtTheProvider: for each revocation style, disconnect
// revokes what the provider's way can revoke, says what it could not, drops
// the tokens and unfiles the grant.
func TestDisconnectRevokesAtTheProvider(t *testing.T) {
	cases := []struct {
		name        string
		flags       func(srv *oauthserver.Server) map[string]interface{}
		wantRevoked []string
		wantReason  string
	}{
		{"rfc7009", func(srv *oauthserver.Server) map[string]interface{} {
			return map[string]interface{}{"revoke_style": "rfc7009", "revoke_url": srv.RevokeURL()}
		}, []string{"refresh_token", "access_token"}, ""},
		{"github", func(srv *oauthserver.Server) map[string]interface{} {
			return map[string]interface{}{"revoke_style": "github", "revoke_url": srv.URL() + "/applications/{client_id}/token"}
		}, []string{"access_token", "refresh_token"}, ""},
		{"slack", func(srv *oauthserver.Server) map[string]interface{} {
			return map[string]interface{}{"revoke_style": "slack", "revoke_url": srv.URL() + "/api/auth.revoke"}
		}, []string{"access_token", "refresh_token"}, ""},
		{"none (Microsoft)", func(srv *oauthserver.Server) map[string]interface{} {
			return map[string]interface{}{"revoke_style": "none", "revoke_url": nil}
		}, nil, "has no per-token revocation"},
		{"provider unreachable", func(srv *oauthserver.Server) map[string]interface{} {
			return map[string]interface{}{"revoke_style": "rfc7009", "revoke_url": closedURL(t)}
		}, nil, "could not be reached"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newOAuthFixture(t, oauthserver.Options{}, nil)
			f.writeService("idp", tc.flags(f.srv))
			f.connect("c")
			g := f.cred("c").OAuth

			resp := mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/c/disconnect", nil))
			receipt := resp.Data["revocation"].(map[string]interface{})
			revoked := receipt["revoked"].([]string)
			if strings.Join(revoked, ",") != strings.Join(tc.wantRevoked, ",") {
				t.Fatalf("revoked %v, want %v (reason %q)", revoked, tc.wantRevoked, receipt["reason"])
			}
			if len(tc.wantRevoked) == 2 {
				if !f.srv.IsRevoked(g.RefreshToken) || !f.srv.IsRevoked(g.AccessToken) {
					t.Fatalf("the receipt says revoked, the provider disagrees")
				}
			} else {
				if nr := receipt["not_revoked"].([]string); len(nr) != 2 {
					t.Fatalf("not_revoked %v, want both tokens", nr)
				}
				if !strings.Contains(receipt["reason"].(string), tc.wantReason) {
					t.Fatalf("reason %q does not say %q", receipt["reason"], tc.wantReason)
				}
				if f.srv.IsRevoked(g.RefreshToken) {
					t.Fatalf("the receipt says not revoked, the provider disagrees")
				}
			}
			c := f.cred("c")
			if c.State != statusDisconnected || c.OAuth.Connected() || !c.OAuth.RefreshDue.IsZero() {
				t.Fatalf("after disconnect: state %s, connected %v, due %v", c.State, c.OAuth.Connected(), c.OAuth.RefreshDue)
			}
			if d := f.read("c"); d["status"] != statusDisconnected {
				t.Fatalf("status %v", d["status"])
			}
			if _, err := f.b.oauthAccessToken(context.Background(), f.s, "c"); err == nil || !strings.Contains(err.Error(), "disconnected") {
				t.Fatalf("a disconnected credential gave a token: %v", err)
			}
			// Connecting again works.
			f.connect("c")
			if d := f.read("c"); d["status"] != statusActive {
				t.Fatalf("reconnect: %v", d["status"])
			}
		})
	}
}

func TestDeleteRevokesFirst(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.connect("c")
	g := f.cred("c").OAuth
	resp := mustOK(t, do(t, f.b, f.s, logical.DeleteOperation, "creds/c", nil))
	receipt := resp.Data["revocation"].(map[string]interface{})
	if len(receipt["revoked"].([]string)) != 2 || !f.srv.IsRevoked(g.RefreshToken) {
		t.Fatalf("delete did not revoke: %v", receipt)
	}
	if c, _ := getCredential(context.Background(), f.s, "c"); c != nil {
		t.Fatalf("not deleted")
	}
}

// closedURL is an http URL on 127.0.0.1 where nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/revoke"
}
