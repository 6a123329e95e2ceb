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

	"github.com/clankteam/credentials/internal/egress"
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

// failingBody fails the test if the edge reads a request body before the
// call is authorized.
type failingBody struct{ t *testing.T }

func (b failingBody) Read([]byte) (int, error) {
	b.t.Error("the body was read before the call was authorized")
	return 0, io.EOF
}

// TestBrokerRefusesBeforeReadingTheBody: what can be refused without Vault
// is refused at once, with the status SDKs act on, and no body is read.
func TestBrokerRefusesBeforeReadingTheBody(t *testing.T) {
	key, _, _ := egress.GenerateEdgeKey()
	edgeKey, err := egress.ParseEdgePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	h := newBrokerHandler("http://127.0.0.1:1", edgeKey, func() string { return "http://portal" }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, tc := range []struct {
		desc, method, path, token string
		header                    map[string]string
		status                    int
		says, errType             string
	}{
		{"no token", "POST", "/broker/acme/stripe/v1/x", "", nil, http.StatusUnauthorized, "Vault token", "authentication_error"},
		{"bad route", "GET", "/broker/acme", "hvs.x", nil, http.StatusNotFound, "/broker/<org>/<credential>/", "not_found_error"},
		{"dot segments", "POST", "/broker/acme/stripe/v1/..;/admin", "hvs.x", nil, http.StatusBadRequest, "'..'", "invalid_request_error"},
		{"double encoding", "POST", "/broker/acme/stripe/v1/%252e%252e/admin", "hvs.x", nil, http.StatusBadRequest, "percent-encode", "invalid_request_error"},
		{"trace", "TRACE", "/broker/acme/stripe/v1/x", "hvs.x", nil, http.StatusMethodNotAllowed, "method", "invalid_request_error"},
		{"h2c upgrade", "GET", "/broker/acme/stripe/v1/realtime", "hvs.x", map[string]string{"Upgrade": "h2c", "Connection": "Upgrade"}, http.StatusNotImplemented, "only WebSocket", "broker_error"},
		{"websocket by POST", "POST", "/broker/acme/stripe/v1/realtime", "hvs.x", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}, http.StatusNotImplemented, "only WebSocket", "broker_error"},
		{"vault down", "POST", "/broker/acme/stripe/v1/x", "hvs.x", nil, http.StatusServiceUnavailable, "Vault cannot be reached", "broker_error"},
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		req.Body = io.NopCloser(failingBody{t})
		req.ContentLength = 24 << 20
		if tc.token != "" {
			req.Header.Set("X-Vault-Token", tc.token)
		}
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var e struct {
			Type  string
			Error struct{ Type, Message string }
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		if rec.Code != tc.status || e.Type != "error" || e.Error.Type != tc.errType || !strings.Contains(e.Error.Message, tc.says) ||
			rec.Header().Get("X-Broker-Error") != "true" {
			t.Errorf("%s: %d %s", tc.desc, rec.Code, rec.Body.String())
		}
		retry := rec.Header().Get("X-Should-Retry")
		if (tc.status == http.StatusServiceUnavailable) != (retry == "") {
			t.Errorf("%s: x-should-retry = %q", tc.desc, retry)
		}
		if tc.status == http.StatusUnauthorized && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: no WWW-Authenticate", tc.desc)
		}
	}
}

func TestVaultRefusals(t *testing.T) {
	call := &edgeCall{cred: "stripe", decoded: "/v1/x"}
	for _, tc := range []struct {
		status    int
		errs      []string
		want      int
		permanent bool
		says      string
	}{
		{403, []string{"2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"}, 401, false, "invalid or expired"},
		{403, []string{"1 error occurred:\n\t* permission denied\n\n"}, 403, true, "may not call GET /v1/x"},
		{400, []string{"path must not contain '.' or '..' segments"}, 400, true, "'..'"},
		{504, []string{"api.example.com did not answer within broker_timeout (30s)"}, 504, true, "broker_timeout"},
		{502, []string{"no access token for x: provider down"}, 502, false, "provider down"},
		{500, []string{"internal error"}, 502, false, "Vault failed"},
		{503, []string{"Vault is sealed"}, 503, false, "sealed"},
	} {
		e := vaultRefusal(tc.status, tc.errs, call, "GET")
		if e.Status != tc.want || e.Permanent != tc.permanent || !strings.Contains(e.Msg, tc.says) || strings.Contains(e.Msg, "occurred") {
			t.Errorf("%d %q: %+v", tc.status, tc.errs, e)
		}
	}
}
