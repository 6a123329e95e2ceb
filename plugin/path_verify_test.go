package credentials

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func verify(b *backend, s logical.Storage, name string) (*logical.Response, error) {
	return b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.UpdateOperation, Path: "creds/" + name + "/verify", Storage: s,
	})
}

func TestVerifyRecordsOutcome(t *testing.T) {
	b, s, _ := getTestBackend(t)
	up := startUpstream(t)
	localService(t, b, s, "checked", map[string]interface{}{
		"base_urls": up.URL,
		"verify":    map[string]interface{}{"method": "GET", "url": up.URL + "/v1/balance", "expect_status": 200},
	})
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/c", map[string]interface{}{
		"type": "api_key", "service": "checked", "api_key": "sk_test_WRONGwrongWRONG0000",
	}))

	steps := []struct {
		desc       string
		key        string
		verified   bool
		status     string
		reasonPart string
	}{
		{"a key the service refuses", "", false, statusNeedsAttention, "answered 401, expected 200"},
		{"the right key", brokerKey, true, statusActive, ""},
		{"a wrong key again", "sk_test_WRONGwrongWRONG0001", false, statusNeedsAttention, "answered 401"},
	}
	for _, st := range steps {
		if st.key != "" {
			mustOK(t, do(t, b, s, logical.UpdateOperation, "creds/c", map[string]interface{}{"api_key": st.key}))
			if st.verified {
				// Replacing the secret alone already clears the earlier
				// failure; make the credential need attention again so
				// that verify is what clears it.
				markNeedsAttention(t, b, s, "c", verifyFailedPrefix+"stale")
			}
		}
		resp, err := verify(b, s, "c")
		if err != nil {
			t.Fatalf("%s: %v", st.desc, err)
		}
		mustOK(t, resp)
		if resp.Data["verified"] != st.verified || resp.Data["status"] != st.status ||
			!strings.Contains(resp.Data["status_reason"].(string), st.reasonPart) {
			t.Errorf("%s: verify = %v", st.desc, resp.Data)
		}
		read := mustOK(t, do(t, b, s, logical.ReadOperation, "creds/c", nil))
		if read.Data["status"] != st.status {
			t.Errorf("%s: stored status %v, want %s", st.desc, read.Data["status"], st.status)
		}
	}
	for _, r := range up.Requests() {
		if r.Path != "/v1/balance" || r.Method != http.MethodGet {
			t.Errorf("verify called %s %s", r.Method, r.Path)
		}
	}
}

func TestVerifyLeavesOtherReasonsAlone(t *testing.T) {
	b, s, _ := getTestBackend(t)
	up := startUpstream(t)
	localService(t, b, s, "checked", map[string]interface{}{
		"base_urls": up.URL,
		"verify":    map[string]interface{}{"method": "GET", "url": up.URL + "/v1/balance", "expect_status": 200},
	})
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/c", map[string]interface{}{
		"type": "api_key", "service": "checked", "api_key": brokerKey,
	}))
	markNeedsAttention(t, b, s, "c", "reconnect required")
	resp, err := verify(b, s, "c")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Data["verified"] != true || resp.Data["status_reason"] != "reconnect required" {
		t.Errorf("verify = %v; another cause's reason must stay", resp.Data)
	}
}

func TestVerifyRefusals(t *testing.T) {
	b, s, _ := getTestBackend(t)
	up := startUpstream(t)
	localService(t, b, s, "noverify", map[string]interface{}{"base_urls": up.URL})
	localService(t, b, s, "elsewhere", map[string]interface{}{
		"base_urls": up.URL + "/api",
		"verify":    map[string]interface{}{"method": "GET", "url": up.URL + "/v1/balance", "expect_status": 200},
	})
	localService(t, b, s, "down", map[string]interface{}{
		"base_urls": "http://127.0.0.1:1",
		"verify":    map[string]interface{}{"method": "GET", "url": "http://127.0.0.1:1/v1/balance", "expect_status": 200},
	})
	for _, svc := range []string{"noverify", "elsewhere", "down"} {
		mustOK(t, do(t, b, s, logical.CreateOperation, "creds/"+svc, map[string]interface{}{
			"type": "api_key", "service": svc, "api_key": brokerKey,
		}))
	}
	for name, want := range map[string]string{
		"noverify":  "has no verify call",
		"elsewhere": "not under the base_urls",
		"missing":   "does not exist",
	} {
		resp, err := verify(b, s, name)
		if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), want) {
			t.Errorf("verify %s = %v, %v; want an error response with %q", name, resp, err, want)
		}
	}
	// An unreachable service says nothing about the credential.
	_, err := verify(b, s, "down")
	assertCoded(t, err, http.StatusBadGateway, "cannot connect")
	read := mustOK(t, do(t, b, s, logical.ReadOperation, "creds/down", nil))
	if read.Data["status"] != statusActive {
		t.Errorf("status after an unreachable verify = %v", read.Data["status"])
	}
	if n := len(up.Requests()); n != 0 {
		t.Errorf("%d refused verify call(s) reached the service", n)
	}
}

func markNeedsAttention(tb testing.TB, b *backend, s logical.Storage, name, reason string) {
	tb.Helper()
	ctx := context.Background()
	c, err := getCredential(ctx, s, name)
	if err != nil || c == nil {
		tb.Fatalf("reading %s: %v", name, err)
	}
	c.State, c.StateReason = statusNeedsAttention, reason
	if err := b.saveCredential(ctx, s, c); err != nil {
		tb.Fatal(err)
	}
}
