package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"
	"golang.org/x/oauth2"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/oauthserver"
)

// TestNoPathRevealsASecret plants a distinctive secret in every kind of
// credential, calls every path of the engine, and searches every response,
// Vault's own log and a file audit device's log for the secrets. The
// tokens the engine itself receives from the provider (a connect's code
// exchange, refreshes) are secrets too: a recorder in front of the token
// endpoint captures them.
// Long on purpose: every path is visited in one place, so none is missed.
func TestNoPathRevealsASecret(t *testing.T) {
	ctx := context.Background()
	org := newOrg(t, "canary")
	mount := contract.Mount(org)
	root := vault.Client()
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))

	auditLog := filepath.Join(t.TempDir(), "audit.log")
	if err := root.Sys().EnableAuditWithOptionsWithContext(ctx, "canary-audit", &api.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": auditLog},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = root.Sys().DisableAuditWithContext(ctx, "canary-audit") })

	// A real grant from the test authorization server, imported as an
	// oauth2 credential, so that its refresh token is a planted secret too.
	idp, grant := startProviderWithGrant(t)
	secrets := map[string]string{
		"api key":       "sk_live_CANARY_apikey_7f3a9b2c4d5e",
		"password":      "CANARY-password-91b2c3d4",
		"file":          "CANARY-file-content-5e6f7a8b",
		"client secret": "CANARY-client-secret-0a1b2c3d",
		"refresh token": grant.RefreshToken,
	}
	write := func(path string, data map[string]interface{}) {
		t.Helper()
		if _, err := admin.Logical().WriteWithContext(ctx, mount+"/"+path, data); err != nil {
			t.Fatalf("writing %s: %v", path, err)
		}
	}
	rec := newTokenRecorder(t, idp)
	svc := providerService(idp)
	svc["oauth"].(map[string]interface{})["token_url"] = rec.URL + strings.TrimPrefix(idp.TokenURL(), idp.URL())
	write("config", map[string]interface{}{"redirect_url": providerRedirect})
	write("services/idp", svc)
	write("services/custom-files", map[string]interface{}{"types": "file"})
	write("apps/idp-app", map[string]interface{}{"service": "idp", "client_id": "engine", "client_secret": secrets["client secret"]})
	write("creds/c-key", map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": secrets["api key"]})
	write("creds/c-pass", map[string]interface{}{"type": "password", "service": "smtp", "username": "mailer", "password": secrets["password"], "host": "smtp.example.com", "port": 587})
	write("creds/c-file", map[string]interface{}{"type": "file", "service": "custom-files", "file": base64.StdEncoding.EncodeToString([]byte(secrets["file"])), "filename": "notes.txt"})
	write("creds/c-oauth", map[string]interface{}{"type": "oauth2", "service": "idp", "app": "idp-app", "refresh_token": secrets["refresh token"]})

	// An oauth2 credential connected through Vault: connect, the
	// provider's consent, callback.
	var outputs [][]byte
	write("creds/c-connected", map[string]interface{}{"type": "oauth2", "service": "idp", "app": "idp-app"})
	status, started := rawCall(t, admin, mount, engineCall{"PUT", "creds/{cred}/connect", nil}, "c-connected", "idp-app")
	var connect struct {
		Data struct {
			AuthURL string `json:"auth_url"`
		} `json:"data"`
	}
	if err := json.Unmarshal(started, &connect); err != nil || status != http.StatusOK || connect.Data.AuthURL == "" {
		t.Fatalf("connect: HTTP %d", status)
	}
	back := authorizeAt(t, connect.Data.AuthURL)
	secrets["authorization code"] = back.Get("code")
	status, completed := rawCall(t, admin, mount, engineCall{"PUT", "creds/{cred}/callback", map[string]interface{}{
		"code": back.Get("code"), "state": back.Get("state"),
	}}, "c-connected", "idp-app")
	if status != http.StatusOK || !bytes.Contains(completed, []byte(`"connected":true`)) {
		t.Fatalf("callback: HTTP %d", status)
	}
	outputs = append(outputs, started, completed)

	for _, cred := range []string{"c-key", "c-pass", "c-file", "c-oauth", "c-connected"} {
		for _, call := range enginePaths {
			if call.method == "DELETE" && !strings.Contains(call.path, "{cred}") {
				continue // keep the app and service for the next credential
			}
			_, body := rawCall(t, admin, mount, call, cred, "idp-app")
			outputs = append(outputs, body)
		}
	}
	serverLog, err := vault.ReadLog()
	if err != nil {
		t.Fatal(err)
	}
	audit, err := os.ReadFile(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	if len(audit) == 0 {
		t.Fatal("the audit device logged nothing")
	}
	outputs = append(outputs, serverLog, audit)
	// The import's validation, the connect's exchange and each
	// credential's refresh path: at least four grants.
	grants := rec.all()
	if len(grants) < 4 {
		t.Fatalf("the token endpoint issued %d grants, want at least 4", len(grants))
	}
	for i, g := range grants {
		secrets[fmt.Sprintf("access token %d", i)] = g.AccessToken
		if g.RefreshToken != "" {
			secrets[fmt.Sprintf("refresh token %d", i)] = g.RefreshToken
		}
	}
	for what, secret := range secrets {
		forms := []string{secret, base64.StdEncoding.EncodeToString([]byte(secret))}
		for _, out := range outputs {
			for _, form := range forms {
				if bytes.Contains(out, []byte(form)) {
					t.Errorf("the %s appears in an output (%d bytes)", what, len(out))
				}
			}
		}
	}
}

// providerRedirect is the redirect URI registered at the test provider:
// the portal's callback, never contacted in these tests.
const providerRedirect = "http://127.0.0.1:1/oauth/callback"

// startProviderWithGrant starts a test authorization server and obtains a
// grant from it as an OAuth client would.
func startProviderWithGrant(t *testing.T) (*oauthserver.Server, *oauth2.Token) {
	t.Helper()
	idp, err := oauthserver.Start(oauthserver.Options{AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	if err := idp.AddClient("engine", "CANARY-client-secret-0a1b2c3d", []string{providerRedirect}, nil); err != nil {
		t.Fatal(err)
	}
	conf := &oauth2.Config{
		ClientID: "engine", ClientSecret: "CANARY-client-secret-0a1b2c3d", RedirectURL: providerRedirect,
		Endpoint: oauth2.Endpoint{AuthURL: idp.AuthURL(), TokenURL: idp.TokenURL()},
		Scopes:   []string{"read"},
	}
	verifier := oauth2.GenerateVerifier()
	back := authorizeAt(t, conf.AuthCodeURL("canary-state-0001", oauth2.S256ChallengeOption(verifier)))
	tok, err := conf.Exchange(context.Background(), back.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	return idp, tok
}

// providerService is a custom service whose OAuth endpoints are the test
// authorization server's.
func providerService(idp *oauthserver.Server) map[string]interface{} {
	return map[string]interface{}{
		"display_name": "Test provider",
		"types":        "oauth2",
		"base_urls":    idp.URL(),
		"injection":    map[string]interface{}{"oauth2": map[string]interface{}{"style": "header", "header": "Authorization", "format": "Bearer {secret}"}},
		"oauth": map[string]interface{}{
			"auth_url": idp.AuthURL(), "token_url": idp.TokenURL(), "revoke_url": idp.RevokeURL(),
			"revoke_style": "rfc7009", "userinfo_url": idp.UserinfoURL(), "pkce": true,
			"default_scopes": []string{"read"},
		},
	}
}

// TestOtherOrgIsDeniedEverywhere calls every path of org A's mount with
// tokens of org B (admin and member) and expects Vault to refuse each.
func TestOtherOrgIsDeniedEverywhere(t *testing.T) {
	a, b := newOrg(t, "deny-a"), newOrg(t, "deny-b")
	ctx := context.Background()
	adminA := vault.ClientWithToken(tokenFor(t, a, provision.RoleAdmin))
	if _, err := adminA.Logical().WriteWithContext(ctx, contract.Mount(a)+"/creds/k", map[string]interface{}{
		"type": "api_key", "service": "stripe", "api_key": "sk_test_isolation_0123456789",
	}); err != nil {
		t.Fatal(err)
	}
	for _, role := range []provision.Role{provision.RoleAdmin, provision.RoleMember} {
		other := vault.ClientWithToken(tokenFor(t, b, role))
		for _, call := range enginePaths {
			status, body := rawCall(t, other, contract.Mount(a), call, "k", "app")
			if status != http.StatusForbidden {
				t.Errorf("org %s %s: %s %s = %d, want 403: %s", b, role, call.method, call.path, status, body)
			}
		}
	}
	// Nothing changed in A.
	s, err := adminA.Logical().ReadWithContext(ctx, contract.Mount(a)+"/creds/k")
	if err != nil || s == nil {
		t.Fatalf("org A's credential: %v", err)
	}
	if fmt.Sprint(s.Data["revision"]) != "1" {
		t.Errorf("org A's credential changed: revision %v", s.Data["revision"])
	}
}

// TestConcurrentUpdatesThroughVault updates one credential from 50
// goroutines through the real Vault: every update lands (the revision counts
// them) and the inventory agrees with the stored credential.
func TestConcurrentUpdatesThroughVault(t *testing.T) {
	org := newOrg(t, "concurrent")
	mount := contract.Mount(org)
	c := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	ctx := context.Background()
	if _, err := c.Logical().WriteWithContext(ctx, mount+"/creds/shared", map[string]interface{}{
		"type": "api_key", "service": "openai", "api_key": "sk-proj-concurrent-000000000000",
	}); err != nil {
		t.Fatal(err)
	}
	const writers = 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := c.Logical().WriteWithContext(ctx, mount+"/creds/shared", map[string]interface{}{
				"description": fmt.Sprintf("writer %d", i),
				"api_key":     fmt.Sprintf("sk-proj-concurrent-%012d", i),
			})
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s, err := c.Logical().ReadWithContext(ctx, mount+"/creds/shared")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(s.Data["revision"]); got != fmt.Sprint(writers+1) {
		t.Fatalf("revision %s after creation and %d updates: an update was lost", got, writers)
	}
	list, err := c.Logical().ListWithContext(ctx, mount+"/creds")
	if err != nil {
		t.Fatal(err)
	}
	info := list.Data["key_info"].(map[string]interface{})["shared"].(map[string]interface{})
	if info["description"] != s.Data["description"] {
		t.Fatalf("inventory says %q, credential says %q", info["description"], s.Data["description"])
	}
	// The key hint belongs to the same write as the description.
	n := strings.TrimPrefix(s.Data["description"].(string), "writer ")
	if want := fmt.Sprintf("…%04s", n); !strings.HasSuffix(fmt.Sprint(s.Data["key_hint"]), strings.ReplaceAll(want, " ", "0")) {
		t.Fatalf("key hint %v does not belong to %v", s.Data["key_hint"], s.Data["description"])
	}
}
