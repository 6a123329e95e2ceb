package browser

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"
)

// These tests drive the portal over plain HTTP against the same real stack:
// the JSON API, and the OAuth callback's binding to the session that
// started the connect. They run even when SKIP_BROWSER_TESTS=1.

// personToken signs in to Vault with userpass, as a script would.
func personToken(t *testing.T, user, password string) string {
	t.Helper()
	sec, err := st.vault.ClientWithToken("").Logical().Write("auth/userpass/login/"+user, map[string]any{"password": password})
	if err != nil {
		t.Fatalf("userpass login of %s: %v", user, err)
	}
	return sec.Auth.ClientToken
}

// apiCall sends a JSON request with a Vault token and decodes the answer.
func apiCall(t *testing.T, token, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, st.url(path), rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if leaked := findCanary(string(raw)); leaked != "" {
		t.Errorf("%s %s answered with a planted secret", method, path)
	}
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: not JSON (%d): %.200s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

// Long on purpose: one check per page and its API twin.
func TestAPIMirrorsThePages(t *testing.T) {
	admin := personToken(t, adminUser, adminPass)
	bob := personToken(t, member, memberPw)
	base := "/api/v1/orgs/" + org
	steps := []struct {
		name   string
		token  string
		method string
		path   string
		body   any
		status int
		check  func(t *testing.T, got map[string]any)
	}{
		{"no token", "", "GET", base + "/creds", nil, 401, nil},
		{"orgs of the admin", admin, "GET", "/api/v1/orgs", nil, 200, func(t *testing.T, got map[string]any) {
			if orgs := got["orgs"].([]any); len(orgs) != 2 || orgs[0] != org || orgs[1] != otherOrg {
				t.Errorf("orgs %v", orgs)
			}
		}},
		{"create an API key", admin, "POST", base + "/creds", map[string]any{
			"name": "api-made", "type": "api_key", "service": "stripe", "api_key": canaryAPIKey, "description": "from a script",
		}, 201, func(t *testing.T, got map[string]any) {
			if got["name"] != "api-made" || got["key_hint"] == "" || got["status"] != "active" {
				t.Errorf("created %v", got)
			}
		}},
		{"create it twice", admin, "POST", base + "/creds", map[string]any{
			"name": "api-made", "type": "api_key", "service": "stripe", "api_key": canaryAPIKey,
		}, 409, nil},
		{"a bad field is Vault's 400", admin, "POST", base + "/creds", map[string]any{
			"name": "api-bad", "type": "api_key", "service": "stripe",
		}, 400, func(t *testing.T, got map[string]any) {
			if !strings.Contains(got["error"].(string), "api_key is required") {
				t.Errorf("error %v", got["error"])
			}
		}},
		{"list filtered by type and name", admin, "GET", base + "/creds?type=api_key&q=API-M", nil, 200, func(t *testing.T, got map[string]any) {
			list := got["credentials"].([]any)
			if len(list) != 1 || list[0].(map[string]any)["name"] != "api-made" {
				t.Errorf("list %v", list)
			}
		}},
		{"read", bob, "GET", base + "/creds/api-made", nil, 200, func(t *testing.T, got map[string]any) {
			if got["description"] != "from a script" {
				t.Errorf("read %v", got)
			}
		}},
		{"update", admin, "PATCH", base + "/creds/api-made", map[string]any{"description": "changed"}, 200, func(t *testing.T, got map[string]any) {
			if got["description"] != "changed" {
				t.Errorf("updated %v", got)
			}
		}},
		{"update a missing credential", admin, "PATCH", base + "/creds/nope", map[string]any{"description": "x"}, 404, nil},
		{"services", bob, "GET", base + "/services", nil, 200, func(t *testing.T, got map[string]any) {
			if len(got["services"].([]any)) < 10 {
				t.Errorf("services %v", got["services"])
			}
		}},
		{"apps never show the client secret", admin, "GET", base + "/apps/" + oauthApp, nil, 200, func(t *testing.T, got map[string]any) {
			if got["client_id"] != oauthClient {
				t.Errorf("app %v", got)
			}
		}},
		{"connect needs a browser", admin, "POST", base + "/creds/api-made/connect", nil, 200, func(t *testing.T, got map[string]any) {
			if !strings.HasSuffix(got["connect_url"].(string), "/orgs/"+org+"/creds/api-made/connect") {
				t.Errorf("connect %v", got)
			}
		}},
		{"a member may not delete", bob, "DELETE", base + "/creds/api-made", nil, 403, nil},
		{"another org is not the member's", bob, "GET", "/api/v1/orgs/" + otherOrg + "/creds", nil, 403, nil},
		{"delete", admin, "DELETE", base + "/creds/api-made", nil, 200, nil},
		{"read after delete", admin, "GET", base + "/creds/api-made", nil, 404, nil},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			status, got := apiCall(t, s.token, s.method, s.path, s.body)
			if status != s.status {
				t.Fatalf("status %d, want %d: %v", status, s.status, got)
			}
			if s.check != nil {
				s.check(t, got)
			}
		})
	}
}

// portalClient is a cookie-keeping HTTP client signed in to the portal,
// like one browser.
func portalClient(t testing.TB, user, password string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(st.url("/signin"), url.Values{"method": {"userpass"}, "username": {user}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("signing in %s: %d", user, resp.StatusCode)
	}
	return c
}

// TestCallbackBoundToSession: a connect started by one session cannot be
// finished by another (a forged link, or a code meant for someone else);
// the session that started it can.
func TestCallbackBoundToSession(t *testing.T) {
	admin := personToken(t, adminUser, adminPass)
	if status, got := apiCall(t, admin, "POST", "/api/v1/orgs/"+org+"/creds", map[string]any{
		"name": "bound", "type": "oauth2", "service": oauthService, "app": oauthApp,
	}); status != 201 {
		t.Fatalf("creating: %d %v", status, got)
	}
	t.Cleanup(func() { apiCall(t, admin, "DELETE", "/api/v1/orgs/"+org+"/creds/bound", nil) })

	starter := portalClient(t, adminUser, adminPass)
	other := portalClient(t, adminUser, adminPass) // the same person, another session
	resp, err := starter.PostForm(st.url("/orgs/"+org+"/creds/bound/connect"), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	authURL := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(authURL, st.oauth.AuthURL()) {
		t.Fatalf("connect answered %d, Location %q", resp.StatusCode, authURL)
	}
	// The provider approves at once and redirects to the portal's callback.
	resp, err = starter.Get(authURL + "&auto=approve")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	callback := resp.Header.Get("Location")
	if !strings.HasPrefix(callback, st.portal.CallbackURL()+"?") {
		t.Fatalf("the provider redirected to %q", callback)
	}

	get := func(c *http.Client) (*http.Response, string) {
		resp, err := c.Get(callback)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get(other)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "does not match a connect started in this session") {
		t.Fatalf("another session's callback answered %d: %.200s", resp.StatusCode, body)
	}
	resp, _ = get(http.DefaultClient)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a callback without a session answered %d", resp.StatusCode)
	}
	if _, got := apiCall(t, admin, "GET", "/api/v1/orgs/"+org+"/creds/bound", nil); got["connected"] == true {
		t.Fatal("a refused callback connected the credential")
	}
	resp, _ = get(starter)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/orgs/"+org+"/creds/bound" {
		t.Fatalf("the starting session's callback answered %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, got := apiCall(t, admin, "GET", "/api/v1/orgs/"+org+"/creds/bound", nil); got["connected"] != true || got["status"] != "active" {
		t.Fatalf("after the right callback: %v", got)
	}
	// The pending connect is used up: replaying the callback is refused.
	if resp, _ = get(starter); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a replayed callback answered %d", resp.StatusCode)
	}
}

// TestSignInWithToken: any Vault token signs in (here one made for the
// org's member policy); a wrong one does not. The session then also
// carries the JSON API.
func TestSignInWithToken(t *testing.T) {
	token, err := st.vault.Token(t.Context(), time.Hour, "orgs-"+org+"-member")
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(st.url("/signin"), url.Values{"method": {"token"}, "token": {"not-a-token"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong token answered %d", resp.StatusCode)
	}
	resp, err = c.PostForm(st.url("/signin"), url.Values{"method": {"token"}, "token": {token}, "next": {"/orgs/" + org + "/creds"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/orgs/"+org+"/creds" {
		t.Fatalf("token sign-in answered %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, cookie := range jar.Cookies(resp.Request.URL) {
		if strings.Contains(cookie.Value, token) {
			t.Fatal("the session cookie shows the token")
		}
	}
	resp, err = c.Get(st.url("/api/v1/orgs"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct{ Orgs []string }
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || len(got.Orgs) != 1 || got.Orgs[0] != org {
		t.Fatalf("the API with the session cookie: %d %v %v", resp.StatusCode, got, err)
	}
}
