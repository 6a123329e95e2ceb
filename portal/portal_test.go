package portal

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testServer is a portal whose Vault is a stand-in that only counts the
// requests reaching it and answers 503: these tests cover what the portal
// decides on its own, before or without Vault. Behaviour with the real
// Vault is tested in testing/browser.
func testServer(t *testing.T) (*Server, *atomic.Int64, *bytes.Buffer) {
	t.Helper()
	var calls atomic.Int64
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, `{"errors":["unavailable"]}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(vault.Close)
	var logs bytes.Buffer
	s, err := NewServer(Config{
		VaultAddr:  vault.URL,
		PublicURL:  "http://portal.test",
		SessionKey: bytes.Repeat([]byte{7}, 32),
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, &calls, &logs
}

// sessionCookie seals sess as the portal would.
func sessionCookieFor(t *testing.T, s *Server, sess *session) *http.Cookie {
	t.Helper()
	v, err := s.sessions.seal(sessionCookie, sess)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Cookie{Name: sessionCookie, Value: v}
}

// Long on purpose: one case per handler.
func TestHandlersWithoutVault(t *testing.T) {
	s, calls, _ := testServer(t)
	live := &session{Token: "hvs.person", User: "alice", Expires: time.Now().Add(time.Hour).Unix(),
		Pending: []pendingConnect{{Org: "acme", Cred: "mail", State: "state-of-this-session", Expires: time.Now().Add(time.Minute).Unix()}}}
	form := func(v url.Values) io.Reader { return strings.NewReader(v.Encode()) }

	tests := []struct {
		name       string
		method     string
		target     string
		body       io.Reader
		headers    map[string]string
		session    *session
		wantStatus int
		// wantLocation prefixes the Location header; wantBody is a part of
		// the body; vaultCalls is how many requests may reach Vault.
		wantLocation string
		wantBody     string
		vaultCalls   int64
	}{
		{name: "sign-in page", method: "GET", target: "/signin", wantStatus: 200, wantBody: `id="signin-userpass"`},
		{name: "home sends the signed-out to sign in", method: "GET", target: "/", wantStatus: 303, wantLocation: "/signin?next=%2F"},
		{name: "a page remembers where to come back", method: "GET", target: "/orgs/acme/creds?type=api_key", wantStatus: 303,
			wantLocation: "/signin?next=" + url.QueryEscape("/orgs/acme/creds?type=api_key")},
		{name: "a signed-out post is refused", method: "POST", target: "/orgs/acme/creds/x/delete", wantStatus: 401},
		{name: "a bad org name is no route", method: "GET", target: "/orgs/ACME/creds", wantStatus: 404},
		{name: "a bad credential name is no route", method: "GET", target: "/orgs/acme/creds/a%2Fb", session: live, wantStatus: 404},
		{name: "cross-site sign-in post refused", method: "POST", target: "/signin",
			body:       form(url.Values{"method": {"userpass"}, "username": {"alice"}, "password": {"pw"}}),
			headers:    map[string]string{"Sec-Fetch-Site": "cross-site", "Content-Type": "application/x-www-form-urlencoded"},
			wantStatus: 403, wantBody: "sent from another site"},
		{name: "cross-origin delete refused by Origin", method: "POST", target: "/orgs/acme/creds/x/delete", session: live,
			headers: map[string]string{"Origin": "http://evil.test"}, wantStatus: 403},
		{name: "same-origin browser post passes the check", method: "POST", target: "/signout", session: live,
			headers: map[string]string{"Sec-Fetch-Site": "same-origin"}, wantStatus: 303, wantLocation: "/signin", vaultCalls: 1},
		{name: "callback without a session is refused before Vault", method: "GET",
			target: "/oauth/callback?code=c&state=state-of-this-session", wantStatus: 400, wantBody: "not signed in to the portal in this browser"},
		{name: "callback with another session's state is refused before Vault", method: "GET",
			target: "/oauth/callback?code=c&state=someone-elses-state", session: live, wantStatus: 400, wantBody: "does not match a connect started in this session"},
		{name: "callback without a state says so", method: "GET",
			target: "/oauth/callback?code=c", session: live, wantStatus: 400, wantBody: "carries no state"},
		{name: "callback without state is refused", method: "GET", target: "/oauth/callback?code=c", session: live, wantStatus: 400},
		{name: "provider error on a pending connect goes back to the credential", method: "GET",
			target: "/oauth/callback?error=access_denied&state=state-of-this-session", session: live,
			wantStatus: 303, wantLocation: "/orgs/acme/creds/mail"},
		{name: "healthz", method: "GET", target: "/healthz", wantStatus: 200, wantBody: "ok"},
		{name: "metrics", method: "GET", target: "/metrics", wantStatus: 200, wantBody: "portal_http_requests_total"},
		{name: "stylesheet", method: "GET", target: "/static/portal.css", wantStatus: 200, wantBody: "--primary"},
		{name: "logo", method: "GET", target: "/static/logos/stripe.svg", wantStatus: 200, wantBody: "<svg"},
		{name: "API without a token", method: "GET", target: "/api/v1/orgs", wantStatus: 401, wantBody: `"error"`},
		{name: "API unknown route", method: "GET", target: "/api/v1/nope", headers: map[string]string{"Authorization": "Bearer t"},
			wantStatus: 404, wantBody: "no such API route"},
		{name: "unknown page", method: "GET", target: "/nope", wantStatus: 404, wantBody: "There is no such page"},
		{name: "vault down on a page", method: "GET", target: "/orgs/acme/creds", session: live, wantStatus: 502, vaultCalls: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := calls.Load()
			req := httptest.NewRequest(tc.method, "http://portal.test"+tc.target, tc.body)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			if tc.session != nil {
				sess := *tc.session
				sess.Pending = append([]pendingConnect(nil), tc.session.Pending...)
				req.AddCookie(sessionCookieFor(t, s, &sess))
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d; body: %.300s", rec.Code, tc.wantStatus, rec.Body.String())
			}
			if loc := rec.Header().Get("Location"); !strings.HasPrefix(loc, tc.wantLocation) {
				t.Errorf("Location %q, want prefix %q", loc, tc.wantLocation)
			}
			if !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Errorf("body lacks %q: %.300s", tc.wantBody, rec.Body.String())
			}
			if got := calls.Load() - before; got != tc.vaultCalls {
				t.Errorf("%d requests reached Vault, want %d", got, tc.vaultCalls)
			}
		})
	}
}

func TestSecurityHeaders(t *testing.T) {
	s, _, _ := testServer(t)
	for _, target := range []string{"/signin", "/nope", "/api/v1/orgs"} {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", "http://portal.test"+target, nil))
		h := rec.Header()
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"frame-ancestors 'none'", "script-src 'none'", "form-action 'self'", "default-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %s", target, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s: CSP allows inline code: %q", target, csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: headers %v", target, h)
		}
	}
	// No page carries inline script or style, which the CSP would block.
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "http://portal.test/signin", nil))
	for _, bad := range []string{"<script", " style=", "<style", "javascript:"} {
		if strings.Contains(rec.Body.String(), bad) {
			t.Errorf("the sign-in page contains %q", bad)
		}
	}
}

func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                     "/",
		"/orgs/acme/creds?q=a": "/orgs/acme/creds?q=a",
		"//evil.test/x":        "/",
		"https://evil.test":    "/",
		"/\\evil.test":         "/",
		"orgs/acme":            "/",
		"/ok\r\nSet-Cookie: x": "/",
	} {
		if got := localPath(in); got != want {
			t.Errorf("localPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for ts, want := range map[string]string{
		"":                     "never",
		"garbage":              "never",
		"2026-05-01T11:59:40Z": "just now",
		"2026-05-01T11:57:00Z": "3 minutes ago",
		"2026-05-01T11:00:00Z": "1 hour ago",
		"2026-04-28T12:00:00Z": "3 days ago",
		"2026-01-01T12:00:00Z": "4 months ago",
		"2023-05-01T12:00:00Z": "3 years ago",
		"2026-05-04T12:00:00Z": "in 3 days",
		"2026-05-01T12:00:30Z": "in less than a minute",
	} {
		if got := ago(ts, now); got != want {
			t.Errorf("ago(%q) = %q, want %q", ts, got, want)
		}
	}
	if got := exactTime("2026-05-01T11:57:00Z"); got != "2026-05-01 11:57:00 UTC" {
		t.Errorf("exactTime = %q", got)
	}
}

func TestLogosAndMonograms(t *testing.T) {
	for svc, want := range map[string]string{
		"stripe":              "/static/logos/stripe.svg",
		"github":              "/static/logos/github.svg",
		"gcp-service-account": "/static/logos/googlecloud.svg",
		"openai":              "",
		"slack":               "",
		"my-internal-api":     "",
	} {
		if got := logoPath(svc); got != want {
			t.Errorf("logoPath(%q) = %q, want %q", svc, got, want)
		}
	}
	for name, want := range map[string]string{
		"OpenAI": "O", "Slack": "S", "Test Provider": "TP", "billing-api v2": "BA", "": "?", "élan vital": "ÉV",
	} {
		if got := monogram(name); got != want {
			t.Errorf("monogram(%q) = %q, want %q", name, got, want)
		}
	}
	first := monoClass("OpenAI")
	for range 3 {
		if got := monoClass("OpenAI"); got != first {
			t.Errorf("monogram colour is not stable: %q, then %q", first, got)
		}
	}
}

func TestFixFor(t *testing.T) {
	for _, tc := range []struct {
		c         credSummary
		wantLabel string
		post      bool
	}{
		{credSummary{Name: "a", Type: "oauth2", Status: "needs_attention", StatusReason: "not connected yet"}, "Connect", false},
		{credSummary{Name: "a", Type: "oauth2", Status: "needs_attention", StatusReason: "refresh failed: invalid_grant"}, "Reconnect", false},
		{credSummary{Name: "a", Type: "oauth2", Status: "disconnected"}, "Reconnect", false},
		{credSummary{Name: "a", Type: "api_key", Status: "needs_attention", StatusReason: "expires in 3 days"}, "Replace key", false},
		{credSummary{Name: "a", Type: "password", Status: "expired", StatusReason: "expired on 2026-01-01"}, "Replace password", false},
		{credSummary{Name: "a", Type: "api_key", Status: "needs_attention", StatusReason: "verify failed: 401"}, "Verify again", true},
		{credSummary{Name: "a", Type: "api_key", Status: "active"}, "", false},
	} {
		fix := fixFor("acme", tc.c)
		switch {
		case tc.wantLabel == "" && fix != nil:
			t.Errorf("%+v: unexpected fix %+v", tc.c, fix)
		case tc.wantLabel != "" && (fix == nil || fix.Label != tc.wantLabel || (fix.Post != "") != tc.post):
			t.Errorf("%+v: fix %+v, want %q (post %v)", tc.c, fix, tc.wantLabel, tc.post)
		}
	}
}

func TestReceiptText(t *testing.T) {
	got := receiptText(map[string]any{"revocation": map[string]any{
		"revoked": []any{"refresh_token"}, "not_revoked": []any{"access_token"}, "reason": "provider has no per-token revocation",
	}})
	want := "Revoked at the provider: refresh_token. Not revoked: access_token (provider has no per-token revocation)."
	if got != want {
		t.Errorf("receiptText = %q, want %q", got, want)
	}
	if receiptText(nil) != "" {
		t.Error("an empty receipt says something")
	}
}

func TestCredFormData(t *testing.T) {
	post := func(v url.Values) *http.Request {
		r := httptest.NewRequest("POST", "/", strings.NewReader(v.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if err := parseForm(r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		name    string
		typ     string
		editing bool
		form    url.Values
		wantMsg string
		want    map[string]any
	}{
		{"api key", "api_key", false, url.Values{"api_key": {" sk_1 "}, "expires": {"2027-01-31"}}, "",
			map[string]any{"api_key": "sk_1", "expires_at": "2027-01-31T00:00:00Z", "description": ""}},
		{"api key missing", "api_key", false, url.Values{}, "Paste the API key.", nil},
		{"api key kept when editing", "api_key", true, url.Values{"description": {"d"}}, "",
			map[string]any{"description": "d", "expires_at": ""}},
		{"bad date", "api_key", false, url.Values{"api_key": {"k"}, "expires": {"31/01/2027"}}, "The expiry date must be a date such as 2027-01-31.", nil},
		{"password with port", "password", false, url.Values{"username": {"u"}, "password": {"p w"}, "host": {"smtp.test"}, "port": {"587"}}, "",
			map[string]any{"username": "u", "password": "p w", "host": "smtp.test", "port": 587, "description": "", "expires_at": ""}},
		{"bad port", "password", false, url.Values{"username": {"u"}, "password": {"p"}, "port": {"58x"}}, "The port must be a number.", nil},
		{"oauth needs an app", "oauth2", false, url.Values{}, "Choose the OAuth app to connect through; register one on the Apps page first.", nil},
		{"file missing", "file", false, url.Values{}, "Choose the file to upload.", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, msg := credFormData(post(tc.form), tc.typ, tc.editing)
			if msg != tc.wantMsg {
				t.Fatalf("message %q, want %q", msg, tc.wantMsg)
			}
			if tc.want == nil {
				return
			}
			if len(data) != len(tc.want) {
				t.Errorf("data %v, want %v", data, tc.want)
			}
			for k, v := range tc.want {
				if data[k] != v {
					t.Errorf("%s = %#v, want %#v", k, data[k], v)
				}
			}
		})
	}
}

func TestAgentSpecFrom(t *testing.T) {
	r := httptest.NewRequest("POST", "/", nil)
	r.PostForm = url.Values{"name": {"billing-bot"}, "credential": {"stripe-live"}, "methods": {"get, post"}, "paths": {"/v1/charges*"}, "ttl": {"10m"}}
	spec, msg := agentSpecFrom(r)
	if msg != "" || spec.TokenTTL != 10*time.Minute || strings.Join(spec.Methods, ",") != "GET,POST" || spec.Paths[0] != "/v1/charges*" {
		t.Fatalf("spec %+v, message %q", spec, msg)
	}
	for _, bad := range []url.Values{
		{"name": {"Bad Name"}, "credential": {"x"}},
		{"name": {"bot"}},
		{"name": {"bot"}, "credential": {"../x"}},
		{"name": {"bot"}, "credential": {"x"}, "ttl": {"48h"}},
	} {
		r.PostForm = bad
		if _, msg := agentSpecFrom(r); msg == "" {
			t.Errorf("%v was accepted", bad)
		}
	}
}

func TestVaultErrorMessages(t *testing.T) {
	if status, _ := vaultError(io.EOF); status != http.StatusBadGateway {
		t.Errorf("a transport error maps to %d", status)
	}
}

// TestMetricsLabelsAreBounded: made-up methods share one label, so no
// caller can grow /metrics (before: 200 such requests added 13 MB).
func TestMetricsLabelsAreBounded(t *testing.T) {
	s, _, _ := testServer(t)
	for i := 0; i < 200; i++ {
		req := httptest.NewRequest("X"+strings.Repeat("A", 100)+strconv.Itoa(i), "/healthz", nil)
		s.ServeHTTP(httptest.NewRecorder(), req)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	if strings.Contains(body, "XAAAA") || !strings.Contains(body, `method="other"`) || len(body) > 64<<10 {
		t.Fatalf("/metrics is %d bytes; made-up methods labelled: %v", len(body), strings.Contains(body, "XAAAA"))
	}
}
