package credentials

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/githubapp"
)

// TestGitHubAppInstallationTokens: a GitHub App key credential mints
// installation tokens on use against a fake GitHub that checks the app's
// JWT as GitHub does (RS256, iss the app's ID, at most 10 minutes),
// narrowed to the credential's repositories and permissions, cached until
// shortly before the hour is up; the key never appears in an answer.
func TestGitHubAppInstallationTokens(t *testing.T) {
	gh, err := githubapp.Start("424242", "987654", []string{"api", "web", "docs"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gh.Close)
	b, s, clock := getTestBackend(t)
	mustOK(t, do(t, b, s, logical.UpdateOperation, "services/gh-app", map[string]interface{}{
		"types": "file", "base_urls": gh.URL, "github_app": true,
	}))
	der, err := x509.MarshalPKCS8PrivateKey(gh.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	file := base64.StdEncoding.EncodeToString(keyPEM)

	for _, tc := range []struct {
		name string
		data map[string]interface{}
		want string
	}{
		{"no installation", map[string]interface{}{"app_id": "424242"}, "installation_id are required"},
		{"not a key", map[string]interface{}{"app_id": "424242", "installation_id": 987654, "file": base64.StdEncoding.EncodeToString([]byte("hello"))}, "private key"},
		{"bad permission", map[string]interface{}{"app_id": "424242", "installation_id": 987654, "permissions": "contents=all"}, "permissions"},
		{"bad app id", map[string]interface{}{"app_id": "x y", "installation_id": 987654}, "app_id must be"},
	} {
		data := map[string]interface{}{"type": "file", "service": "gh-app", "file": file}
		for k, v := range tc.data {
			data[k] = v
		}
		resp, _ := doErr(b, s, logical.CreateOperation, "creds/bad", data)
		if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, resp)
		}
	}

	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/repo-bot", map[string]interface{}{
		"type": "file", "service": "gh-app", "file": file, "app_id": "424242", "installation_id": 987654,
		"repositories": "api,web", "permissions": `{"contents": "read"}`,
	}))
	read := mustOK(t, do(t, b, s, logical.ReadOperation, "creds/repo-bot", nil)).Data
	if read["app_id"] != "424242" || read["filename"] != "github-app.pem" {
		t.Fatalf("read: %v", read)
	}
	for i := 0; i < 3; i++ {
		status, _, body := proxyOK(t, b, s, "repo-bot", map[string]interface{}{"method": "GET", "path": "/installation/repositories"})
		if status != 200 || !strings.Contains(body, `"api"`) || strings.Contains(body, `"docs"`) {
			t.Fatalf("call %d: %d %s", i, status, body)
		}
		assertNoSecret(t, "answer", body, string(keyPEM))
	}
	reqs := gh.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d token requests for 3 calls, want 1 (cached)", len(reqs))
	}
	if r := reqs[0]; r.Issuer != "424242" || r.JWTLifetime > 10*time.Minute {
		t.Fatalf("app JWT: iss %q, lifetime %s", r.Issuer, r.JWTLifetime)
	}
	if perms, _ := reqs[0].Body["permissions"].(map[string]any); perms["contents"] != "read" {
		t.Fatalf("token request body: %v", reqs[0].Body)
	}
	clock.advance(56 * time.Minute)
	proxyOK(t, b, s, "repo-bot", map[string]interface{}{"method": "GET", "path": "/installation/repositories"})
	if n := len(gh.Requests()); n != 2 {
		t.Fatalf("%d token requests after the hour, want 2", n)
	}

	// A wrong app ID: the fake refuses the JWT, and the answer says so.
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/wrong-app", map[string]interface{}{
		"type": "file", "service": "gh-app", "file": file, "app_id": "1", "installation_id": 987654,
	}))
	_, err = proxyCall(b, s, "wrong-app", map[string]interface{}{"method": "GET", "path": "/installation/repositories"})
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a wrong app ID: %v", err)
	}
}
