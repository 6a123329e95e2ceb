package oauthserver

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func revokeRFC7009(t *testing.T, srv *Server, token, secret string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.RevokeURL(), strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(testClientID, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestRevokeRFC7009AccessToken(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	tok := fullFlow(t, conf)

	if code := revokeRFC7009(t, srv, tok.AccessToken, "wrong-secret"); code != http.StatusUnauthorized {
		t.Errorf("wrong client secret: %d", code)
	}
	if !srv.Introspect(tok.AccessToken) || srv.IsRevoked(tok.AccessToken) {
		t.Fatal("unauthenticated revocation took effect")
	}
	if code := revokeRFC7009(t, srv, tok.AccessToken, testClientSecret); code != http.StatusOK {
		t.Fatalf("revoke: %d", code)
	}
	if srv.Introspect(tok.AccessToken) || !srv.IsRevoked(tok.AccessToken) {
		t.Error("access token still active after revocation")
	}
	if code, _ := userinfo(t, srv, tok.AccessToken); code != http.StatusUnauthorized {
		t.Errorf("userinfo with revoked token: %d", code)
	}
	// fosite revokes the whole grant (RFC 7009 allows it): the refresh token too.
	if _, err := refresh(t, conf, tok.RefreshToken); retrieveError(t, err).ErrorCode != "invalid_grant" {
		t.Error("refresh token of a revoked grant still works")
	}
	// Unknown tokens are "revoked" too, per RFC 7009 2.2.
	if code := revokeRFC7009(t, srv, "no-such-token", testClientSecret); code != http.StatusOK {
		t.Errorf("unknown token: %d", code)
	}
	if srv.IsRevoked("no-such-token") {
		t.Error("IsRevoked true for a token never issued")
	}
	if srv.RevokeCalls() != 3 {
		t.Errorf("RevokeCalls = %d", srv.RevokeCalls())
	}
}

func TestRevokeRFC7009RefreshToken(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	tok := fullFlow(t, conf)
	if code := revokeRFC7009(t, srv, tok.RefreshToken, testClientSecret); code != http.StatusOK {
		t.Fatalf("revoke: %d", code)
	}
	if !srv.IsRevoked(tok.RefreshToken) || !srv.IsRevoked(tok.AccessToken) {
		t.Error("revoking the refresh token did not revoke the grant")
	}
	_, err := refresh(t, conf, tok.RefreshToken)
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("refresh after revocation: %q", re.ErrorCode)
	}
}

func TestRevokeOtherClientsTokenRefused(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	tok := fullFlow(t, conf)
	if err := srv.AddClient("other", "other-secret", []string{testRedirect}, nil); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.RevokeURL(), strings.NewReader(url.Values{"token": {tok.AccessToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("other", "other-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// fosite answers 200 here (RFC 7009 reveals nothing about foreign
	// tokens), so the check is that the token survived.
	if !srv.Introspect(tok.AccessToken) || srv.IsRevoked(tok.AccessToken) {
		t.Errorf("another client revoked the token (status %d)", resp.StatusCode)
	}
}

func githubRevoke(t *testing.T, srv *Server, clientID, secret, token string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"access_token": token})
	req, _ := http.NewRequest(http.MethodDelete, srv.URL()+"/applications/"+clientID+"/token", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(clientID, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestRevokeGitHubStyle(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	tok := fullFlow(t, conf)
	if code := githubRevoke(t, srv, testClientID, "wrong", tok.AccessToken); code != http.StatusUnauthorized {
		t.Errorf("bad credentials: %d", code)
	}
	if err := srv.AddClient("other", "other-secret", nil, nil); err != nil {
		t.Fatal(err)
	}
	if code := githubRevoke(t, srv, "other", "other-secret", tok.AccessToken); code != http.StatusNotFound {
		t.Errorf("other app's token: %d", code)
	}
	if !srv.Introspect(tok.AccessToken) {
		t.Fatal("failed calls revoked the token")
	}
	if code := githubRevoke(t, srv, testClientID, testClientSecret, tok.AccessToken); code != http.StatusNoContent {
		t.Fatalf("revoke: %d", code)
	}
	if srv.Introspect(tok.AccessToken) || !srv.IsRevoked(tok.AccessToken) || !srv.IsRevoked(tok.RefreshToken) {
		t.Error("token not revoked")
	}
	if code := githubRevoke(t, srv, testClientID, testClientSecret, tok.AccessToken); code != http.StatusNotFound {
		t.Errorf("second revoke: %d", code)
	}
	if srv.RevokeCalls() != 4 {
		t.Errorf("RevokeCalls = %d", srv.RevokeCalls())
	}
}

func slackRevoke(t *testing.T, srv *Server, token string, bearer bool) map[string]any {
	t.Helper()
	var req *http.Request
	if bearer {
		req, _ = http.NewRequest(http.MethodPost, srv.URL()+"/api/auth.revoke", nil)
		req.Header.Set("Authorization", "Bearer "+token)
	} else {
		req, _ = http.NewRequest(http.MethodPost, srv.URL()+"/api/auth.revoke", strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRevokeSlackStyle(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	a, b := fullFlow(t, conf), fullFlow(t, conf)

	if m := slackRevoke(t, srv, a.AccessToken, true); m["ok"] != true || m["revoked"] != true {
		t.Errorf("bearer: %v", m)
	}
	if !srv.IsRevoked(a.AccessToken) || srv.Introspect(a.RefreshToken) {
		t.Error("bearer revoke did not take")
	}
	if m := slackRevoke(t, srv, b.AccessToken, false); m["ok"] != true || m["revoked"] != true {
		t.Errorf("form: %v", m)
	}
	if !srv.IsRevoked(b.AccessToken) {
		t.Error("form revoke did not take")
	}
	if m := slackRevoke(t, srv, a.AccessToken, true); m["ok"] != false || m["error"] != "invalid_auth" {
		t.Errorf("revoked token: %v", m)
	}
	if srv.RevokeCalls() != 3 {
		t.Errorf("RevokeCalls = %d", srv.RevokeCalls())
	}
}

func TestIntrospectEndpoint(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	tok := fullFlow(t, conf)
	check := func(token string) map[string]any {
		req, _ := http.NewRequest(http.MethodPost, srv.IntrospectURL(), strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(testClientID, testClientSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return m
	}
	if m := check(tok.AccessToken); m["active"] != true || m["client_id"] != testClientID || m["sub"] != "1001" {
		t.Errorf("active token: %v", m)
	}
	revokeRFC7009(t, srv, tok.AccessToken, testClientSecret)
	if m := check(tok.AccessToken); m["active"] != false {
		t.Errorf("revoked token: %v", m)
	}
}
