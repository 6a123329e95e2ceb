package integration

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
)

// TestBodyCredentialGoesOnlyIntoItsField: a service that takes its key in
// a body field (Slack's token=, in a JSON object or a form), reached
// through the proxy's tunnel, the edge and the Vault path. The key goes
// into the declared field, replacing the placeholder the program put
// there; the same placeholder in another field reaches the service as it
// is; a body naming the field twice, or of another type, is refused before
// the service is called.
func TestBodyCredentialGoesOnlyIntoItsField(t *testing.T) {
	org := newOrg(t, "body-inject")
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	const key = "xoxb-body-canary-3c2b1a0f9e8d"
	const placeholder = "xoxb-broker-cred-slack-bot"
	var calls atomic.Int64
	svc := serveTLS(t, true, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		// What it got, with the key marked where it stood, and the key
		// said back, for the scrubber.
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"type": r.Header.Get("Content-Type"), "got": strings.ReplaceAll(string(body), key, "<KEY>"), "echo": string(body)})
	}))
	write(t, admin, mount+"/services/chat", map[string]interface{}{
		"types": "api_key", "base_urls": svc.URL + "/api",
		"injection": `{"api_key": {"style": "body", "field": "token"}}`,
	})
	write(t, admin, mount+"/creds/slack-bot", map[string]interface{}{"type": "api_key", "service": "chat", "api_key": key})
	caDir := t.TempDir()
	caPath, err := portal.CreateProxyCA(caDir, org, false)
	if err != nil {
		t.Fatal(err)
	}
	srv := servePortal(t, portal.Config{ProxyAddr: "127.0.0.1:0", ProxyCADir: caDir, OutboundRoots: vault.CA.Pool()})
	token := newAgent(t, org, provision.AgentSpec{Name: "poster", Creds: []string{"slack-bot"}})
	tunnel := proxyClient(t, srv.ProxyURL(), url.UserPassword(org, token), caPath)

	type answer struct{ Type, Got, Echo string }
	var outputs []string
	call := func(c *http.Client, u, ctype, body string, extra ...string) (int, answer, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		for i := 0; i+1 < len(extra); i += 2 {
			req.Header.Set(extra[i], extra[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		outputs = append(outputs, string(raw))
		var a answer
		_ = json.Unmarshal(raw, &a)
		return resp.StatusCode, a, string(raw)
	}
	sent := `{"channel": "C1", "token": "` + placeholder + `", "text": "` + placeholder + `"}`
	want := `{"channel": "C1", "token": "<KEY>", "text": "` + placeholder + `"}`

	// Through the proxy's tunnel, a JSON object.
	status, got, raw := call(tunnel, svc.URL+"/api/chat.postMessage", "application/json", sent)
	if status != http.StatusOK || got.Got != want {
		t.Errorf("through the proxy: %d %s\nthe service got %s\nwant           %s", status, raw, got.Got, want)
	}
	if strings.Contains(got.Echo, key) || !strings.Contains(got.Echo, placeholder) {
		t.Errorf("the key said back was not scrubbed, or the rest was changed: %s", got.Echo)
	}

	// Through the edge, a form.
	edgeURL := srv.URL() + "/broker/" + org + "/slack-bot/chat.postMessage"
	status, got, raw = call(http.DefaultClient, edgeURL, "application/x-www-form-urlencoded",
		"channel=C1&text="+placeholder+"&token="+placeholder, "Authorization", "Bearer "+token)
	if want := "channel=C1&text=" + placeholder + "&token=<KEY>"; status != http.StatusOK || got.Got != want {
		t.Errorf("through the edge: %d %s\nthe service got %s\nwant           %s", status, raw, got.Got, want)
	}

	// Through the Vault path, the field absent: it is added.
	s, err := viaVault(token, org, "slack-bot", map[string]interface{}{
		"method": "POST", "path": "/chat.postMessage", "headers": map[string]interface{}{"Content-Type": "application/json"},
		"body": base64.StdEncoding.EncodeToString([]byte(`{"text":"hi"}`)),
	})
	if err != nil {
		t.Fatalf("through Vault: %v", err)
	}
	vaultBody, _ := base64.StdEncoding.DecodeString(fmt.Sprint(s.Data["body"]))
	outputs = append(outputs, string(vaultBody))
	if err := json.Unmarshal(vaultBody, &got); err != nil || got.Got != `{"text":"hi","token":"<KEY>"}` {
		t.Errorf("through Vault the service got %s", vaultBody)
	}

	// Refused before the service: the field twice, a body of another type.
	before := calls.Load()
	for _, c := range []struct{ ctype, body, says string }{
		{"application/json", `{"token":"` + placeholder + `","token":"x"}`, "more than once"},
		{"text/plain", "token=" + placeholder, "send a JSON object"},
	} {
		if status, _, raw := call(tunnel, svc.URL+"/api/chat.postMessage", c.ctype, c.body); status != http.StatusBadRequest || !strings.Contains(raw, c.says) {
			t.Errorf("%s %s: %d %s, want a 400 saying %q", c.ctype, c.body, status, raw, c.says)
		}
	}
	if n := calls.Load() - before; n != 0 {
		t.Errorf("refused bodies reached the service %d times", n)
	}
	for _, out := range outputs {
		if strings.Contains(out, key) {
			t.Fatalf("the key in what the program saw: %s", out)
		}
	}
}
