package credentials

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/clankteam/credentials/internal/egress"

	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/logical"
)

// Fuzz targets for the input parsing of every path that writes: config,
// services/<name>, apps/<name>, creds/<name> and proxy/<name>. Each drives
// the backend as Vault does and checks the contract: a refusal stores
// nothing, an acceptance reads back valid, and no secret comes back.

func FuzzConfigWrite(f *testing.F) {
	f.Add(`{"redirect_url":"https://portal.example/cb","broker_timeout":"30s"}`)
	f.Add(`{"broker_max_body":-1}`)
	f.Add(`{"refresh_ahead":"1h","warn_before":0,"nope":1}`)
	f.Fuzz(func(t *testing.T, raw string) {
		data := fuzzData(raw)
		if data == nil {
			return
		}
		b, s, _ := getTestBackend(t)
		resp, err := doErr(b, s, logical.UpdateOperation, "config", data)
		if refusedBeforeHandler(err) {
			return
		}
		if err != nil {
			t.Fatalf("config write failed instead of refusing: %v", err)
		}
		entry, _ := s.Get(context.Background(), configStorageKey)
		if resp != nil && resp.IsError() {
			if entry != nil {
				t.Fatalf("refused config was stored")
			}
			return
		}
		cfg, err := b.getConfig(context.Background(), s)
		if err != nil || cfg.BrokerTimeout <= 0 || cfg.BrokerMaxBody <= 0 || cfg.BrokerMaxBody > maxBrokerMaxBody {
			t.Fatalf("accepted config is unusable: %+v, %v", cfg, err)
		}
	})
}

func FuzzServiceDefinition(f *testing.F) {
	f.Add(`{"types":"api_key","base_urls":"https://api.example.com","injection":{"api_key":{"style":"header","header":"X-Key","format":"{secret}"}}}`)
	f.Add(`{"types":"oauth2","oauth":{"auth_url":"https://a.example/auth","token_url":"https://a.example/token","revoke_style":"github"}}`)
	f.Add(`{"types":"api_key","base_urls":"https://*.*.example.com","verify":{"method":"GET","url":"x","expect_status":99}}`)
	f.Add(`{"types":["password"],"allow_private_targets":true,"base_urls":["http://10.0.0.1/x?y"]}`)
	f.Fuzz(func(t *testing.T, raw string) {
		data := fuzzData(raw)
		if data == nil {
			return
		}
		b, s, _ := getTestBackend(t)
		resp, err := doErr(b, s, logical.CreateOperation, "services/fz", data)
		if refusedBeforeHandler(err) {
			return
		}
		if err != nil {
			t.Fatalf("service write failed instead of refusing: %v", err)
		}
		svc, gerr := b.getService(context.Background(), s, "fz")
		if gerr != nil {
			t.Fatal(gerr)
		}
		if resp != nil && resp.IsError() {
			if svc != nil {
				t.Fatalf("refused service was stored")
			}
			return
		}
		if svc == nil {
			t.Fatalf("accepted service was not stored")
		}
		if err := svc.Validate(); err != nil || svc.Builtin {
			t.Fatalf("stored service is invalid: %v", err)
		}
		// Whatever was accepted, the broker can use without panicking.
		for _, typ := range svc.Types {
			_ = injectionFor(svc, typ)
		}
		_, _ = egress.ResolveTarget(egressService(svc), "/x")
	})
}

func FuzzAppWrite(f *testing.F) {
	f.Add("google", "cid", "csecret-FUZZ", "gmail,calendar")
	f.Add("github", "", "x", "")
	f.Add("stripe", "cid", "s", "a b")
	f.Fuzz(func(t *testing.T, svc, clientID, clientSecret, scopes string) {
		b, s, _ := getTestBackend(t)
		resp, err := doErr(b, s, logical.CreateOperation, "apps/fz", map[string]interface{}{
			"service": svc, "client_id": clientID, "client_secret": clientSecret, "scopes": scopes,
		})
		if refusedBeforeHandler(err) {
			return
		}
		if err != nil {
			t.Fatalf("app write failed instead of refusing: %v", err)
		}
		entry, _ := s.Get(context.Background(), appStoragePrefix+"fz")
		if resp != nil && resp.IsError() {
			if entry != nil {
				t.Fatalf("refused app was stored")
			}
			return
		}
		read := do(t, b, s, logical.ReadOperation, "apps/fz", nil)
		if !strings.Contains(svc+clientID+scopes, clientSecret) {
			assertNoSecretValue(t, read, clientSecret)
		}
	})
}

func FuzzCredFields(f *testing.F) {
	f.Add("stripe-live", "api_key", "stripe", "sk_live_FUZZfuzz0123456789", "", "", "", 0, "", "")
	f.Add("mailer", "password", "smtp", "", "bot", "pw-FUZZ-1234", "smtp.example.com", 587, "", "2027-01-31T00:00:00Z")
	f.Add("f", "file", "gcp-service-account", "", "", "", "", 0, "e30=", "")
	f.Add("..", "api_key", "openai", "k k", "", "", "", -1, "", "never")
	f.Fuzz(func(t *testing.T, name, typ, svc, apiKey, user, password, host string, port int, file, expires string) {
		data := map[string]interface{}{"type": typ, "service": svc}
		for k, v := range map[string]string{"api_key": apiKey, "username": user, "password": password, "host": host, "file": file, "expires_at": expires} {
			if v != "" {
				data[k] = v
			}
		}
		if port != 0 {
			data["port"] = port
		}
		if strings.Contains(name, "/") || name == "" {
			return // another path, or none
		}
		b, s, _ := getTestBackend(t)
		resp, err := doErr(b, s, logical.CreateOperation, "creds/"+name, data)
		if refusedBeforeHandler(err) {
			return
		}
		if err != nil {
			t.Fatalf("credential write failed instead of refusing: %v", err)
		}
		c, gerr := getCredential(context.Background(), s, name)
		if gerr != nil {
			t.Fatal(gerr)
		}
		if resp != nil && resp.IsError() {
			if c != nil {
				t.Fatalf("refused credential was stored")
			}
			return
		}
		if c == nil || c.Type != typ || c.Service != svc || validateCredName(name) != nil {
			t.Fatalf("accepted credential stored as %+v", c)
		}
		read := do(t, b, s, logical.ReadOperation, "creds/"+name, nil)
		shown := strings.Join([]string{name, typ, svc, user, host, expires}, "\n")
		for _, secret := range []string{apiKey, password} {
			if !strings.Contains(shown, secret) {
				assertNoSecretValue(t, read, secret)
			}
		}
	})
}

func FuzzProxyFields(f *testing.F) {
	f.Add("GET", "/v1/ping", `{"X-A":"1"}`, "")
	f.Add("POST", "/echo?a=b", `{"Content-Type":["application/json"]}`, "eyJhIjoxfQ==")
	f.Add("get", "../x", `{"Bad Name":"x"}`, "%%")
	f.Fuzz(func(t *testing.T, method, path, headers, body string) {
		b, s, _ := getTestBackend(t)
		// A closed port: accepted calls fail to connect, quickly.
		localService(t, b, s, "closed", map[string]interface{}{"base_urls": "http://127.0.0.1:1"})
		mustOK(t, do(t, b, s, logical.CreateOperation, "creds/c", map[string]interface{}{
			"type": "api_key", "service": "closed", "api_key": brokerKey,
		}))
		data := map[string]interface{}{"method": method, "path": path, "body": body}
		var h map[string]interface{}
		if json.Unmarshal([]byte(headers), &h) == nil {
			data["headers"] = h
		}
		resp, err := proxyCall(b, s, "c", data)
		if err != nil {
			var coded logical.HTTPCodedError
			if !errors.As(err, &coded) {
				t.Fatalf("proxy failed with an uncoded error: %v", err)
			}
			if strings.Contains(err.Error(), brokerKey) {
				t.Fatalf("error names the secret")
			}
			return
		}
		if resp == nil || !resp.IsError() {
			t.Fatalf("a call to a closed port succeeded: %v", resp)
		}
		if strings.Contains(resp.Error().Error(), brokerKey) {
			t.Fatalf("error names the secret")
		}
	})
}

// refusedBeforeHandler says whether the framework refused the input
// before the path's handler saw it (a field of the wrong type): Vault
// answers such a user error with 400, which is the contract.
func refusedBeforeHandler(err error) bool {
	var ue errutil.UserError
	return errors.As(err, &ue)
}

// fuzzData decodes a JSON object as Vault's HTTP layer would, or nil.
func fuzzData(raw string) map[string]interface{} {
	var data map[string]interface{}
	if err := json.Unmarshal([]byte(raw), &data); err != nil {
		return nil
	}
	return data
}

func assertNoSecretValue(tb testing.TB, resp *logical.Response, secret string) {
	tb.Helper()
	if resp == nil || len(secret) < 8 {
		return
	}
	raw, _ := json.Marshal(resp.Data)
	if strings.Contains(string(raw), secret) {
		tb.Fatalf("a read returned the secret")
	}
}
