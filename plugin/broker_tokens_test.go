package credentials

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/oauthserver"
)

// The broker with the two types whose secret is an access token obtained on
// use: OAuth 2 grants (refreshed when due) and GCP service-account keys
// (minted by the JWT-bearer grant). The test authorization server's
// /userinfo answers 200 only to a live access token, so a 200 through the
// broker proves the right token was injected.

func TestProxyInjectsOAuthAccessTokenRefreshedOnUse(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{AccessTokenLifespan: time.Hour}, nil)
	f.connect("idp-grant")
	token := f.cred("idp-grant").OAuth.AccessToken

	status, _, body := proxyOK(t, f.b, f.s, "idp-grant", map[string]interface{}{"path": "/userinfo"})
	if status != http.StatusOK {
		t.Fatalf("userinfo through the broker: %d %s", status, body)
	}
	if strings.Contains(body, token) {
		t.Errorf("the access token came back to the caller")
	}
	refreshes := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken)

	// Past the token's expiry on the engine's clock, the next use
	// refreshes first and injects the new token.
	f.clock.advance(2 * time.Hour)
	status, _, body = proxyOK(t, f.b, f.s, "idp-grant", map[string]interface{}{"path": "/userinfo"})
	if status != http.StatusOK {
		t.Fatalf("userinfo after expiry: %d %s", status, body)
	}
	if got := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken) - refreshes; got != 1 {
		t.Errorf("%d refreshes on use, want 1", got)
	}
	if f.cred("idp-grant").OAuth.AccessToken == token {
		t.Errorf("the access token was not replaced")
	}
}

func TestProxyRefusesDisconnectedOAuth(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.createCred("never-connected")
	_, err := proxyCall(f.b, f.s, "never-connected", map[string]interface{}{"path": "/userinfo"})
	if err == nil {
		t.Fatalf("a credential without a grant was brokered")
	}
	var coded logical.HTTPCodedError
	if !errors.As(err, &coded) || coded.Code() != http.StatusBadGateway {
		t.Errorf("error = %v, want a 502", err)
	}
}

// brokerSAEmail is the client_email of testServiceAccountJSON's key.
const brokerSAEmail = "robot@demo-project.iam.gserviceaccount.com"

func TestProxyInjectsServiceAccountToken(t *testing.T) {
	srv, err := oauthserver.Start(oauthserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	key := testServiceAccountJSON(t, srv.TokenURL())
	srv.AddServiceAccount(brokerSAEmail, &testRSAKey.PublicKey)

	b, s, _ := getTestBackend(t)
	const scope = "https://www.googleapis.com/auth/devstorage.read_only"
	mustOK(t, do(t, b, s, logical.CreateOperation, "services/gcp-local", map[string]interface{}{
		"types": "file", "base_urls": srv.URL(),
		"oauth": map[string]interface{}{"token_url": srv.TokenURL(), "default_scopes": []interface{}{scope}},
	}))
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/robot", map[string]interface{}{
		"type": "file", "service": "gcp-local", "file": b64(key),
	}))
	for i := 0; i < 3; i++ {
		status, _, body := proxyOK(t, b, s, "robot", map[string]interface{}{"path": "/userinfo"})
		if status != http.StatusOK {
			t.Fatalf("call %d: userinfo with the minted token: %d %s", i, status, body)
		}
	}
	grants := srv.JWTBearerGrants()
	if len(grants) != 1 || grants[0].ServiceAccount != brokerSAEmail || !slices.Equal(grants[0].Scopes, []string{scope}) {
		t.Errorf("JWT-bearer grants = %+v; want one (cached after), for the service's default scopes", grants)
	}

	// A plain file (not a service-account key) has nothing to inject.
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/notes", map[string]interface{}{
		"type": "file", "service": "gcp-local", "file": b64([]byte("just a file")), "filename": "notes.txt",
	}))
	resp, err := proxyCall(b, s, "notes", map[string]interface{}{"path": "/userinfo"})
	if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "only GCP service-account keys") {
		t.Errorf("plain file brokered: %v, %v", resp, err)
	}
}
