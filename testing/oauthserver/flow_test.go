package oauthserver

import (
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func TestCodeFlowWithPKCEAutoApprove(t *testing.T) {
	logs := &logSink{}
	srv, conf := newTestServer(t, Options{AccessTokenLifespan: 10 * time.Minute, Logf: logs.logf})
	tok := fullFlow(t, conf)

	if tok.TokenType != "bearer" && tok.TokenType != "Bearer" {
		t.Errorf("token_type = %q", tok.TokenType)
	}
	if left := time.Until(tok.Expiry); left < 9*time.Minute || left > 11*time.Minute {
		t.Errorf("expiry in %v, want about 10m", left)
	}
	if got := tok.Extra("scope"); got != "repo user:email" {
		t.Errorf("scope = %v", got)
	}
	if !srv.Introspect(tok.AccessToken) || !srv.Introspect(tok.RefreshToken) {
		t.Error("fresh tokens are not active")
	}
	code, id := userinfo(t, srv, tok.AccessToken)
	if code != http.StatusOK || id != (Identity{ID: "1001", Email: "agent-owner@example.test", Login: "agent-owner"}) {
		t.Errorf("userinfo = %d %+v", code, id)
	}
	// The library's own client (conf.Client) sends the bearer header.
	resp, err := conf.Client(ctxT(t), tok).Get(srv.UserinfoURL())
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("userinfo via oauth2 client: %v %v", err, resp)
	}
	resp.Body.Close()
	if code, _ := userinfo(t, srv, tok.RefreshToken); code != http.StatusUnauthorized {
		t.Errorf("refresh token accepted as bearer: %d", code)
	}
	if code, _ := userinfo(t, srv, "not-a-token"); code != http.StatusUnauthorized {
		t.Errorf("bogus bearer: %d", code)
	}
	if n := srv.TokenCallsFor(GrantAuthorizationCode); n != 1 {
		t.Errorf("authorization_code calls = %d", n)
	}
	for _, secret := range []string{tok.AccessToken, tok.RefreshToken, testClientSecret} {
		if strings.Contains(logs.all(), secret) {
			t.Fatal("a token or secret reached the log")
		}
	}
	if !strings.Contains(logs.all(), "grant=authorization_code ok") {
		t.Errorf("log lacks the outcome line: %q", logs.all())
	}
}

func TestPKCE(t *testing.T) {
	t.Run("wrong verifier", func(t *testing.T) {
		_, conf := newTestServer(t, Options{})
		code := authCode(t, conf, oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
		_, err := conf.Exchange(ctxT(t), code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
		if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
			t.Errorf("error = %q, want invalid_grant", re.ErrorCode)
		}
	})
	t.Run("required", func(t *testing.T) {
		_, conf := newTestServer(t, Options{RequirePKCE: true})
		resp, err := noRedirect.Get(conf.AuthCodeURL(testState, oauth2.SetAuthURLParam("auto", "approve")))
		if err != nil {
			t.Fatal(err)
		}
		if q := callbackParams(t, resp); q.Get("error") != "invalid_request" || q.Get("code") != "" {
			t.Errorf("no challenge under RequirePKCE: %v", q)
		}
		authCode(t, conf, oauth2.S256ChallengeOption(oauth2.GenerateVerifier())) // with one it works
	})
	t.Run("plain refused", func(t *testing.T) {
		_, conf := newTestServer(t, Options{})
		resp, err := noRedirect.Get(conf.AuthCodeURL(testState, oauth2.SetAuthURLParam("auto", "approve"),
			oauth2.SetAuthURLParam("code_challenge", strings.Repeat("a", 43)),
			oauth2.SetAuthURLParam("code_challenge_method", "plain")))
		if err != nil {
			t.Fatal(err)
		}
		if q := callbackParams(t, resp); q.Get("error") == "" {
			t.Errorf("plain PKCE accepted: %v", q)
		}
	})
	t.Run("public client", func(t *testing.T) {
		srv, conf := newTestServer(t, Options{})
		if err := srv.AddPublicClient("cli", []string{testRedirect}, nil); err != nil {
			t.Fatal(err)
		}
		conf.ClientID, conf.ClientSecret = "cli", ""
		conf.Endpoint.AuthStyle = oauth2.AuthStyleInParams
		fullFlow(t, conf)
		resp, err := noRedirect.Get(conf.AuthCodeURL(testState, oauth2.SetAuthURLParam("auto", "approve")))
		if err != nil {
			t.Fatal(err)
		}
		if q := callbackParams(t, resp); q.Get("error") == "" {
			t.Errorf("public client without PKCE got %v", q)
		}
	})
}

func TestCodeReplayRevokesTokens(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	verifier := oauth2.GenerateVerifier()
	code := authCode(t, conf, oauth2.S256ChallengeOption(verifier))
	tok, err := conf.Exchange(ctxT(t), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	_, err = conf.Exchange(ctxT(t), code, oauth2.VerifierOption(verifier))
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("replayed code: %q", re.ErrorCode)
	}
	if srv.Introspect(tok.AccessToken) || !srv.IsRevoked(tok.AccessToken) || !srv.IsRevoked(tok.RefreshToken) {
		t.Error("tokens from a replayed code stay valid")
	}
}

var formAction = regexp.MustCompile(`<form method="post" action="([^"]+)">`)

// fetchConsentPage fetches the consent page like a browser and returns the
// absolute URL its form posts to.
func fetchConsentPage(t *testing.T, srv *Server, conf *oauth2.Config, opts ...oauth2.AuthCodeOption) string {
	t.Helper()
	resp, err := noRedirect.Get(conf.AuthCodeURL(testState, opts...))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("consent page: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	page := string(body)
	for _, want := range []string{`id="allow"`, `id="deny"`, testClientID, "user:email"} {
		if !strings.Contains(page, want) {
			t.Errorf("consent page lacks %s", want)
		}
	}
	if strings.Contains(page, "<script") {
		t.Error("consent page uses JavaScript")
	}
	m := formAction.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no form in consent page:\n%s", page)
	}
	action, err := url.Parse(html.UnescapeString(m[1])) // as a browser decodes the attribute
	if err != nil {
		t.Fatal(err)
	}
	base, _ := url.Parse(srv.AuthURL())
	return base.ResolveReference(action).String()
}

func TestConsentFormAllowAndDeny(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	verifier := oauth2.GenerateVerifier()
	action := fetchConsentPage(t, srv, conf, oauth2.S256ChallengeOption(verifier))
	if srv.TokenCalls() != 0 {
		t.Fatal("showing the page must not touch the token endpoint")
	}

	// "Allow", signed in as another account.
	resp, err := noRedirect.PostForm(action, url.Values{"decision": {"allow"}, "login": {"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	q := callbackParams(t, resp)
	if q.Get("code") == "" || q.Get("state") != testState {
		t.Fatalf("allow: %v", q)
	}
	tok, err := conf.Exchange(ctxT(t), q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if code, id := userinfo(t, srv, tok.AccessToken); code != http.StatusOK || id.Login != "alice" || id.Email != "alice@example.test" || id.ID == "1001" {
		t.Errorf("userinfo after consent as alice: %d %+v", code, id)
	}

	// "Deny".
	action = fetchConsentPage(t, srv, conf, oauth2.S256ChallengeOption(verifier))
	resp, err = noRedirect.PostForm(action, url.Values{"decision": {"deny"}})
	if err != nil {
		t.Fatal(err)
	}
	if q := callbackParams(t, resp); q.Get("error") != "access_denied" || q.Get("code") != "" || q.Get("state") != testState {
		t.Errorf("deny: %v", q)
	}
}

func TestAutoApproveOptionAndDenyParam(t *testing.T) {
	srv, conf := newTestServer(t, Options{AutoApprove: true})
	resp, err := noRedirect.Get(conf.AuthCodeURL(testState, oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if err != nil {
		t.Fatal(err)
	}
	if q := callbackParams(t, resp); q.Get("code") == "" {
		t.Errorf("AutoApprove did not redirect with a code: %v", q)
	}
	resp, err = noRedirect.Get(conf.AuthCodeURL(testState, oauth2.SetAuthURLParam("auto", "deny"),
		oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if err != nil {
		t.Fatal(err)
	}
	if q := callbackParams(t, resp); q.Get("error") != "access_denied" {
		t.Errorf("auto=deny: %v", q)
	}
	srv.SetAutoApprove(false)
	fetchConsentPage(t, srv, conf, oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
}

func TestUnregisteredRedirectRefused(t *testing.T) {
	_, conf := newTestServer(t, Options{})
	conf.RedirectURL = "http://127.0.0.1:9/elsewhere"
	resp, err := noRedirect.Get(conf.AuthCodeURL(testState, oauth2.SetAuthURLParam("auto", "approve")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// fosite must not redirect to an unregistered URI at all.
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		t.Errorf("redirected to %s", resp.Header.Get("Location"))
	}
}

func TestRefreshRotation(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	tok := fullFlow(t, conf)
	next, err := refresh(t, conf, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if next.RefreshToken == "" || next.RefreshToken == tok.RefreshToken || next.AccessToken == tok.AccessToken {
		t.Fatal("refresh did not rotate both tokens")
	}
	if srv.Introspect(tok.RefreshToken) || srv.Introspect(tok.AccessToken) {
		t.Error("rotated-away tokens still active")
	}
	if srv.IsRevoked(tok.RefreshToken) {
		t.Error("rotation reported as revocation")
	}
	if !srv.Introspect(next.AccessToken) || !srv.Introspect(next.RefreshToken) {
		t.Error("new tokens not active")
	}
	if code, id := userinfo(t, srv, next.AccessToken); code != http.StatusOK || id.Login != "agent-owner" {
		t.Errorf("identity lost over refresh: %d %+v", code, id)
	}
	if n := srv.TokenCallsFor(GrantRefreshToken); n != 1 {
		t.Errorf("refresh calls = %d", n)
	}
}

func TestRefreshReuseRevokesFamily(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	tok := fullFlow(t, conf)
	next, err := refresh(t, conf, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	_, err = refresh(t, conf, tok.RefreshToken)
	re := retrieveError(t, err)
	if re.ErrorCode != "invalid_grant" || re.Response.StatusCode != http.StatusBadRequest {
		t.Errorf("reuse: %d %q", re.Response.StatusCode, re.ErrorCode)
	}
	if srv.Introspect(next.RefreshToken) || srv.Introspect(next.AccessToken) {
		t.Error("reuse did not revoke the family")
	}
	if !srv.IsRevoked(next.RefreshToken) || !srv.IsRevoked(next.AccessToken) {
		t.Error("family not reported revoked")
	}
	if _, err := refresh(t, conf, next.RefreshToken); retrieveError(t, err).ErrorCode != "invalid_grant" {
		t.Error("newest refresh token survived reuse detection")
	}
}

func TestRefreshTokenExpires(t *testing.T) {
	_, conf := newTestServer(t, Options{RefreshTokenLifespan: time.Second})
	tok := fullFlow(t, conf)
	time.Sleep(1600 * time.Millisecond) // fosite rounds expiry to the second: at most 1.5s
	_, err := refresh(t, conf, tok.RefreshToken)
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("expired refresh token: %q", re.ErrorCode)
	}
}

func TestFixedAddrAndHandler(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv, err := New(Options{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if srv.URL() != "http://"+addr {
		t.Errorf("URL = %s, want http://%s", srv.URL(), addr)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/userinfo", nil))
	if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") == "" {
		t.Errorf("Handler /userinfo without token: %d", rec.Code)
	}
	srv.Close()
	if _, err := http.Get(srv.URL() + "/userinfo"); err == nil {
		t.Error("server still answers after Close")
	}
}
