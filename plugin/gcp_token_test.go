package credentials

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/oauthserver"
)

const testSAEmail = "robot@demo-project.iam.gserviceaccount.com"

// saFixture stores a service-account key whose token_uri is srv's token
// endpoint, as credential "sa".
func saFixture(t *testing.T, register bool) (*backend, logical.Storage, *testClock, *oauthserver.Server, *credential) {
	t.Helper()
	srv, err := oauthserver.Start(oauthserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	key := testServiceAccountJSON(t, srv.TokenURL())
	if register {
		srv.AddServiceAccount(testSAEmail, &testRSAKey.PublicKey)
	}
	b, s, clock := getTestBackend(t)
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/sa", map[string]interface{}{
		"type": "file", "service": "gcp-service-account", "file": b64(key),
	}))
	c, err := getCredential(context.Background(), s, "sa")
	if err != nil || c == nil {
		t.Fatal(err)
	}
	return b, s, clock, srv, c
}

func TestServiceAccountTokens(t *testing.T) {
	ctx := context.Background()
	b, _, clock, srv, c := saFixture(t, true)
	const gmail = "https://www.googleapis.com/auth/gmail.readonly"

	tok, exp, err := b.serviceAccountToken(ctx, c, []string{gmail}, "")
	if err != nil {
		t.Fatal(err)
	}
	if !srv.Introspect(tok) {
		t.Fatalf("the minted token is not active at the token endpoint")
	}
	if d := exp.Sub(clock.now()); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expiry in %v, want about an hour", d)
	}
	grants := srv.JWTBearerGrants()
	if len(grants) != 1 || grants[0].ServiceAccount != testSAEmail || grants[0].Subject != "" || !slices.Equal(grants[0].Scopes, []string{gmail}) {
		t.Fatalf("grants %+v", grants)
	}

	// The same request is served from the cache until shortly before expiry.
	again, _, err := b.serviceAccountToken(ctx, c, []string{" " + gmail, gmail}, "")
	if err != nil || again != tok || len(srv.JWTBearerGrants()) != 1 {
		t.Fatalf("a repeated request minted again (err %v)", err)
	}
	clock.advance(56 * time.Minute)
	if renewed, _, err := b.serviceAccountToken(ctx, c, []string{gmail}, ""); err != nil || renewed == tok {
		t.Fatalf("a token about to expire was reused (err %v)", err)
	}

	// Domain-wide delegation: acting as a Workspace user.
	dtok, _, err := b.serviceAccountToken(ctx, c, []string{gmail}, "alice@corp.example")
	if err != nil || dtok == tok || !srv.Introspect(dtok) {
		t.Fatalf("delegated token: %v", err)
	}
	grants = srv.JWTBearerGrants()
	if last := grants[len(grants)-1]; last.Subject != "alice@corp.example" || last.ServiceAccount != testSAEmail {
		t.Fatalf("delegated grant %+v", last)
	}

	// No scopes: the catalog's default for the service.
	if _, _, err := b.serviceAccountToken(ctx, c, nil, ""); err != nil {
		t.Fatal(err)
	}
	grants = srv.JWTBearerGrants()
	if last := grants[len(grants)-1]; !slices.Equal(last.Scopes, []string{"https://www.googleapis.com/auth/cloud-platform"}) {
		t.Fatalf("default scopes %v", last.Scopes)
	}
}

func TestServiceAccountTokenRefusals(t *testing.T) {
	ctx := context.Background()
	b, _, _, srv, c := saFixture(t, false) // the server does not know the key
	_, _, err := b.serviceAccountToken(ctx, c, []string{"https://www.googleapis.com/auth/drive"}, "")
	if err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("an unknown key: %v", err)
	}
	if strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Fatalf("the error shows the key")
	}
	if len(srv.JWTBearerGrants()) != 0 {
		t.Fatalf("a grant for an unknown key")
	}
	for _, subject := range []string{"not-an-email", "a b@c.d"} {
		if _, _, err := b.serviceAccountToken(ctx, c, []string{"x"}, subject); err == nil || !strings.Contains(err.Error(), "subject") {
			t.Errorf("subject %q: %v", subject, err)
		}
	}
	if _, _, err := b.serviceAccountToken(ctx, c, []string{"two scopes"}, ""); err == nil {
		t.Errorf("a scope with a space was accepted")
	}
	notSA := &credential{Name: "k", Type: typeAPIKey}
	if _, _, err := b.serviceAccountToken(ctx, notSA, []string{"x"}, ""); err == nil {
		t.Errorf("an api_key credential minted a token")
	}
}
