package portal

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestBrokerTokenFromEachPlace(t *testing.T) {
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	for _, tc := range []struct {
		header, value, want, from string
	}{
		{"Authorization", "Bearer hvs.tok", "hvs.tok", "Authorization"},
		{"Authorization", "token hvs.tok", "hvs.tok", "Authorization"},
		{"Authorization", "Bot hvs.tok", "hvs.tok", "Authorization"},
		{"Authorization", basic("hvs.tok", ""), "hvs.tok", "Authorization"},
		{"Authorization", basic("", "hvs.tok"), "hvs.tok", "Authorization"},
		{"X-Vault-Token", "hvs.tok", "hvs.tok", "X-Vault-Token"},
		{"X-Api-Key", "hvs.tok", "hvs.tok", "X-Api-Key"},
		{"Api-Key", "hvs.tok", "hvs.tok", "Api-Key"},
		{"X-Other", "hvs.tok", "", ""},
	} {
		h := http.Header{}
		h.Set(tc.header, tc.value)
		if got, from := brokerToken(h); got != tc.want || from != tc.from {
			t.Errorf("%s: %q: token %q from %q, want %q from %q", tc.header, tc.value, got, from, tc.want, tc.from)
		}
	}
}

func TestSplitBrokerPath(t *testing.T) {
	for path, want := range map[string]string{
		"/broker/acme/stripe/v1/balance": "acme stripe /v1/balance",
		"/broker/acme/stripe":            "acme stripe /",
		"/broker/acme/stripe/":           "acme stripe /",
		"/broker/acme/stripe/a%2Fb/c":    "acme stripe /a%2Fb/c",
		"/broker/Acme/stripe/x":          "",
		"/broker/acme/../x":              "",
		"/broker/acme":                   "",
		"/other/acme/stripe/x":           "",
	} {
		org, cred, rest, ok := splitBrokerPath(path)
		got := ""
		if ok {
			got = org + " " + cred + " " + rest
		}
		if got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
}

// fakeVault answers the proxy path as the engine would, and records what
// the portal sent it.
type fakeVault struct {
	gotToken, gotPath string
	got               proxyRequest
	status            int
	answer            any
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.gotToken, f.gotPath = r.Header.Get("X-Vault-Token"), r.URL.Path
	_ = json.NewDecoder(r.Body).Decode(&f.got)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.status)
	_ = json.NewEncoder(w).Encode(f.answer)
}

func TestBrokerHandlerForwardsAndAnswers(t *testing.T) {
	fv := &fakeVault{status: http.StatusOK, answer: map[string]any{"data": map[string]any{
		"status": 302,
		"headers": map[string]any{
			"Location": []string{"https://api.example.com/v1/next"}, "Set-Cookie": []string{"a=b"},
			"X-Upstream": []string{"1"}, "Content-Length": []string{"999"},
		},
		"body":          base64.StdEncoding.EncodeToString([]byte("moved")),
		"redirect_path": "/v1/next?x=1",
	}}}
	vault := httptest.NewServer(fv)
	defer vault.Close()
	h := newBrokerHandler(vault.URL, slog.New(slog.NewTextHandler(io.Discard, nil)))

	req := httptest.NewRequest(http.MethodPost, "/broker/acme/stripe/v1/charges?limit=3", strings.NewReader("amount=5"))
	req.Header.Set("Authorization", "Bearer hvs.agent")
	req.Header.Set("Cookie", "portal_session=secret")
	req.Header.Set("X-Forwarded-For", "10.0.0.1")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Sdk-Key", "hvs.agent")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)

	if fv.gotToken != "hvs.agent" || fv.gotPath != "/v1/orgs/acme/proxy/stripe" {
		t.Errorf("Vault got token %q on %s", fv.gotToken, fv.gotPath)
	}
	body, _ := base64.StdEncoding.DecodeString(fv.got.Body)
	if fv.got.Method != "POST" || fv.got.Path != "/v1/charges?limit=3" || string(body) != "amount=5" {
		t.Errorf("proxy request = %+v body %q", fv.got, body)
	}
	for _, h := range []string{"Authorization", "Cookie", "X-Forwarded-For", "X-Sdk-Key"} {
		if _, ok := fv.got.Headers[h]; ok {
			t.Errorf("%s was passed to the engine", h)
		}
	}
	if fv.got.Headers["Content-Type"][0] != "application/x-www-form-urlencoded" {
		t.Errorf("headers = %v", fv.got.Headers)
	}

	res := rec.Result()
	if res.StatusCode != 302 || rec.Body.String() != "moved" {
		t.Errorf("answer %d %q", res.StatusCode, rec.Body.String())
	}
	if got := res.Header.Get("Location"); got != "/broker/acme/stripe/v1/next?x=1" {
		t.Errorf("Location = %q, want it kept on the broker", got)
	}
	if res.Header.Get("Set-Cookie") != "" || res.Header.Get("X-Upstream") != "1" || res.Header.Get("Content-Length") == "999" {
		t.Errorf("headers = %v", res.Header)
	}
}

func TestBrokerHandlerRefusals(t *testing.T) {
	fv := &fakeVault{status: http.StatusForbidden, answer: map[string]any{"errors": []string{"permission denied"}}}
	vault := httptest.NewServer(fv)
	defer vault.Close()
	h := newBrokerHandler(vault.URL, nil)

	for _, tc := range []struct {
		desc, path, token string
		status            int
		says              string
	}{
		{"no token", "/broker/acme/stripe/v1/x", "", http.StatusUnauthorized, "Vault token"},
		{"bad path", "/broker/acme", "hvs.x", http.StatusNotFound, "/broker/<org>/<credential>/"},
		{"vault refuses", "/broker/acme/stripe/v1/x", "hvs.x", http.StatusForbidden, "permission denied"},
	} {
		req := httptest.NewRequest(http.MethodGet, tc.path, nil)
		if tc.token != "" {
			req.Header.Set("X-Vault-Token", tc.token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var e struct {
			Error struct{ Type, Message string }
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		if rec.Code != tc.status || e.Error.Type != "broker_error" || !strings.Contains(e.Error.Message, tc.says) ||
			rec.Header().Get("X-Broker-Error") != "true" {
			t.Errorf("%s: %d %s", tc.desc, rec.Code, rec.Body.String())
		}
	}
}
