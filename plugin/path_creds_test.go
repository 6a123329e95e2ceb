package credentials

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

const canaryKey = "sk_live_CANARYcanary0123456789abcd"

func writeGoogleApp(tb testing.TB, b *backend, s logical.Storage) {
	tb.Helper()
	mustOK(tb, do(tb, b, s, logical.CreateOperation, "apps/google-app", map[string]interface{}{
		"service": "google", "client_id": "cid", "client_secret": "csecret-CANARY", "scopes": "gmail,calendar",
	}))
}

func TestCredCreateEachType(t *testing.T) {
	b, s, _ := getTestBackend(t)
	writeGoogleApp(t, b, s)
	sa := testServiceAccountJSON(t, "https://oauth2.googleapis.com/token")

	cases := []struct {
		name string
		data map[string]interface{}
		want map[string]interface{}
	}{
		{"stripe-live", map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": canaryKey},
			map[string]interface{}{"type": "api_key", "service": "stripe", "key_hint": "sk_live_…abcd", "status": "active"}},
		{"mailer", map[string]interface{}{"type": "password", "service": "smtp", "username": "bot@example.com", "password": "pw-CANARY-123", "host": "smtp.example.com", "port": 587},
			map[string]interface{}{"username": "bot@example.com", "host": "smtp.example.com", "port": 587}},
		{"gcp", map[string]interface{}{"type": "file", "service": "gcp-service-account", "file": b64(sa)},
			map[string]interface{}{"client_email": "robot@demo-project.iam.gserviceaccount.com", "project_id": "demo-project", "filename": "service-account.json"}},
		{"gmail", map[string]interface{}{"type": "oauth2", "service": "google", "app": "google-app"},
			map[string]interface{}{"app": "google-app", "connected": false, "status": "needs_attention", "status_reason": "not connected yet"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mustOK(t, do(t, b, s, logical.CreateOperation, "creds/"+tc.name, tc.data))
			resp := mustOK(t, do(t, b, s, logical.ReadOperation, "creds/"+tc.name, nil))
			for k, want := range tc.want {
				if got := resp.Data[k]; fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s = %v, want %v", k, got, want)
				}
			}
			for _, secretField := range []string{"api_key", "password", "file", "refresh_token", "access_token", "client_secret"} {
				if _, ok := resp.Data[secretField]; ok {
					t.Errorf("read returned secret field %s", secretField)
				}
			}
		})
	}
}

func TestCredCreateRefusesBadInput(t *testing.T) {
	b, s, _ := getTestBackend(t)
	writeGoogleApp(t, b, s)
	mustOK(t, do(t, b, s, logical.CreateOperation, "apps/gh-app", map[string]interface{}{
		"service": "github", "client_id": "x", "client_secret": "y",
	}))
	badSA := strings.Replace(string(testServiceAccountJSON(t, "https://oauth2.googleapis.com/token")), "BEGIN PRIVATE KEY", "BEGIN NOTHING", 1)

	cases := []struct {
		desc, name string
		data       map[string]interface{}
		wantMsg    string
	}{
		{"uppercase name", "Stripe", map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": canaryKey}, "credential name"},
		{"name too long", strings.Repeat("a", 129), map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": canaryKey}, "credential name"},
		{"dots only", "..", map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": canaryKey}, "credential name"},
		{"no type", "x", map[string]interface{}{"service": "stripe", "api_key": canaryKey}, "type and service are required"},
		{"unknown type", "x", map[string]interface{}{"type": "cookie", "service": "stripe", "api_key": canaryKey}, "type must be one of"},
		{"unknown service", "x", map[string]interface{}{"type": "api_key", "service": "nope", "api_key": canaryKey}, "unknown service"},
		{"type the service does not take", "x", map[string]interface{}{"type": "password", "service": "stripe", "username": "u", "password": "p"}, "takes api_key"},
		{"missing api key", "x", map[string]interface{}{"type": "api_key", "service": "stripe"}, "api_key is required"},
		{"api key with space", "x", map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": "sk live"}, "without spaces"},
		{"field of another type", "x", map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": canaryKey, "password": "p"}, "password is not a field of api_key"},
		{"unknown field", "x", map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": canaryKey, "colour": "red"}, "unknown field(s): colour"},
		{"expires_at not RFC 3339", "x", map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": canaryKey, "expires_at": "tomorrow"}, "RFC 3339"},
		{"smtp without host", "x", map[string]interface{}{"type": "password", "service": "smtp", "username": "u", "password": "p"}, "host and port are required"},
		{"smtp bad port", "x", map[string]interface{}{"type": "password", "service": "smtp", "username": "u", "password": "p", "host": "h", "port": 70000}, "port must be"},
		{"file not base64", "x", map[string]interface{}{"type": "file", "service": "gcp-service-account", "file": "%%%"}, "base64"},
		{"file too large", "x", map[string]interface{}{"type": "file", "service": "gcp-service-account", "file": b64(make([]byte, maxFileSize+1))}, "larger than"},
		{"file not a service account", "x", map[string]interface{}{"type": "file", "service": "gcp-service-account", "file": b64([]byte(`{"hello":1}`))}, "service-account key"},
		{"service account with bad key", "x", map[string]interface{}{"type": "file", "service": "gcp-service-account", "file": b64([]byte(badSA))}, "private_key"},
		{"oauth2 without app", "x", map[string]interface{}{"type": "oauth2", "service": "google"}, "app is required"},
		{"oauth2 with missing app", "x", map[string]interface{}{"type": "oauth2", "service": "google", "app": "nope"}, "does not exist"},
		{"oauth2 with app of another service", "x", map[string]interface{}{"type": "oauth2", "service": "google", "app": "gh-app"}, "registered for github"},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			resp, err := doErr(b, s, logical.CreateOperation, "creds/"+tc.name, tc.data)
			if err != nil && !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %v, want a 400 mentioning %q", err, tc.wantMsg)
			}
			if err == nil {
				if resp == nil || !resp.IsError() {
					t.Fatalf("accepted; want a 400 mentioning %q", tc.wantMsg)
				}
				if !strings.Contains(resp.Error().Error(), tc.wantMsg) {
					t.Fatalf("message %q does not mention %q", resp.Error(), tc.wantMsg)
				}
				if strings.Contains(resp.Error().Error(), canaryKey) {
					t.Fatalf("message quotes the secret")
				}
			}
			keys, err := s.List(context.Background(), "creds/")
			if err != nil || len(keys) != 0 {
				t.Fatalf("stored %v after a refused write", keys)
			}
		})
	}
}

func TestCredUpdate(t *testing.T) {
	b, s, _ := getTestBackend(t)
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/k", map[string]interface{}{"type": "api_key", "service": "openai", "api_key": "sk-proj-aaaaaaaaaaaaaaaaaaaa1111"}))

	resp := do(t, b, s, logical.UpdateOperation, "creds/k", map[string]interface{}{"type": "password"})
	if !resp.IsError() || !strings.Contains(resp.Error().Error(), "type cannot change") {
		t.Fatalf("type change: %v", resp)
	}
	resp = do(t, b, s, logical.UpdateOperation, "creds/k", map[string]interface{}{"service": "stripe"})
	if !resp.IsError() || !strings.Contains(resp.Error().Error(), "service cannot change") {
		t.Fatalf("service change: %v", resp)
	}
	mustOK(t, do(t, b, s, logical.UpdateOperation, "creds/k", map[string]interface{}{"api_key": "sk-proj-bbbbbbbbbbbbbbbbbbbb2222", "description": "agents' key"}))
	c, err := getCredential(context.Background(), s, "k")
	if err != nil {
		t.Fatal(err)
	}
	if c.APIKey != "sk-proj-bbbbbbbbbbbbbbbbbbbb2222" || c.Description != "agents' key" || c.KeyHint != "sk-proj-…2222" {
		t.Fatalf("after update: key hint %q, description %q", c.KeyHint, c.Description)
	}
}

func apiKeyCred(expiresAt string) map[string]interface{} {
	d := map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": canaryKey}
	if expiresAt != "" {
		d["expires_at"] = expiresAt
	}
	return d
}

func TestCredStatus(t *testing.T) {
	b, s, clock := getTestBackend(t)
	at := func(d time.Duration) string { return clock.now().Add(d).Format(time.RFC3339) }
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/soon", apiKeyCred(at(72*time.Hour+time.Minute))))
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/later", apiKeyCred(at(30*24*time.Hour))))
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/never", apiKeyCred("")))

	status := func(name string) (string, string) {
		resp := mustOK(t, do(t, b, s, logical.ReadOperation, "creds/"+name, nil))
		return resp.Data["status"].(string), resp.Data["status_reason"].(string)
	}
	if st, r := status("soon"); st != statusNeedsAttention || r != "expires in 3 days" {
		t.Errorf("soon: %s %q", st, r)
	}
	if st, _ := status("later"); st != statusActive {
		t.Errorf("later: %s", st)
	}
	clock.advance(31 * 24 * time.Hour)
	if st, r := status("later"); st != statusExpired || !strings.HasPrefix(r, "expired on ") {
		t.Errorf("later after 31 days: %s %q", st, r)
	}
	if st, _ := status("never"); st != statusActive {
		t.Errorf("never: %s", st)
	}
}

func listCreds(t *testing.T, b *backend, s logical.Storage, data map[string]interface{}) ([]string, map[string]interface{}) {
	t.Helper()
	resp := mustOK(t, do(t, b, s, logical.ListOperation, "creds/", data))
	keys, _ := resp.Data["keys"].([]string)
	// Through Vault the response is JSON; decode it the same way.
	raw, err := json.Marshal(resp.Data["key_info"])
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]interface{}
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatal(err)
	}
	return keys, info
}

func TestCredsList(t *testing.T) {
	b, s, clock := getTestBackend(t)
	writeGoogleApp(t, b, s)
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/stripe-live", apiKeyCred(clock.now().Add(24*time.Hour).Format(time.RFC3339))))
	if resp := do(t, b, s, logical.CreateOperation, "creds/Stripe-test", apiKeyCred("")); !resp.IsError() {
		t.Fatal("uppercase name accepted")
	}
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/stripe-test", apiKeyCred("")))
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/mail", map[string]interface{}{"type": "password", "service": "smtp", "username": "u", "password": "p", "host": "smtp.example.com", "port": 25}))
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/gmail", map[string]interface{}{"type": "oauth2", "service": "google", "app": "google-app"}))

	cases := []struct {
		desc string
		data map[string]interface{}
		want string
	}{
		{"all", nil, "gmail mail stripe-live stripe-test"},
		{"by type", map[string]interface{}{"type": "api_key"}, "stripe-live stripe-test"},
		{"by name, any case", map[string]interface{}{"q": "STRIPE"}, "stripe-live stripe-test"},
		{"by status", map[string]interface{}{"status": "needs_attention"}, "gmail stripe-live"},
		{"type and search", map[string]interface{}{"type": "password", "q": "ma"}, "mail"},
		{"page 1", map[string]interface{}{"limit": 2}, "gmail mail"},
		{"page 2", map[string]interface{}{"limit": 2, "after": "mail"}, "stripe-live stripe-test"},
		{"nothing", map[string]interface{}{"q": "zzz"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			keys, _ := listCreds(t, b, s, tc.data)
			if got := strings.Join(keys, " "); got != tc.want {
				t.Errorf("keys = %q, want %q", got, tc.want)
			}
		})
	}

	_, info := listCreds(t, b, s, nil)
	live := info["stripe-live"].(map[string]interface{})
	if live["type"] != "api_key" || live["service"] != "stripe" || live["status"] != "needs_attention" || live["status_reason"] != "expires in 24 hours" {
		t.Errorf("key_info[stripe-live] = %v", live)
	}
	if info["gmail"].(map[string]interface{})["status_reason"] != "not connected yet" {
		t.Errorf("key_info[gmail] = %v", info["gmail"])
	}

	for _, bad := range []map[string]interface{}{{"type": "cookie"}, {"status": "sleeping"}, {"limit": -1}} {
		resp := do(t, b, s, logical.ListOperation, "creds/", bad)
		if !resp.IsError() {
			t.Errorf("list %v accepted", bad)
		}
	}
}

func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	b, s, _ := getTestBackend(t)
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/shared", apiKeyCred("")))
	const writers = 50
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Each writer appends to the description under the
			// credential's lock, as a read-modify-write would.
			lock := b.credLock("shared")
			lock.Lock()
			defer lock.Unlock()
			c, err := getCredential(context.Background(), s, "shared")
			if err != nil {
				t.Error(err)
				return
			}
			c.Description += fmt.Sprintf("[%d]", i)
			if err := b.saveCredential(context.Background(), s, c); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	c, _ := getCredential(context.Background(), s, "shared")
	if n := strings.Count(c.Description, "["); n != writers {
		t.Fatalf("%d of %d updates survived", n, writers)
	}
	if c.Revision != writers+1 {
		t.Fatalf("revision %d after creation and %d updates", c.Revision, writers)
	}
	_, info := listCreds(t, b, s, nil)
	if info["shared"].(map[string]interface{})["description"] != c.Description {
		t.Fatal("index line differs from the stored credential")
	}
}
