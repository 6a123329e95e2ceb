package oauthserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func badRefreshForm() url.Values {
	return url.Values{"grant_type": {GrantRefreshToken}, "refresh_token": {"ory_rt_unknown.unknown"}}
}

func TestQuirkNoneErrorsAre400JSON(t *testing.T) {
	srv, _ := newTestServer(t, Options{})
	resp, body := postToken(t, srv, badRefreshForm(), "")
	if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil || m["error"] != "invalid_grant" {
		t.Errorf("body %s", body)
	}
}

func TestQuirkErrorsWithHTTP200(t *testing.T) {
	srv, conf := newTestServer(t, Options{Quirks: Quirks{ErrorsWithHTTP200: true}})
	resp, body := postToken(t, srv, badRefreshForm(), "")
	var m map[string]any
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &m) != nil || m["error"] != "invalid_grant" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// x/oauth2 still recognises it as an error.
	_, err := refresh(t, conf, "ory_rt_unknown.unknown")
	if re := retrieveError(t, err); re.Response.StatusCode != http.StatusOK || re.ErrorCode != "invalid_grant" {
		t.Errorf("%d %q", re.Response.StatusCode, re.ErrorCode)
	}
	fullFlow(t, conf) // successes unaffected
}

func TestQuirkFormEncodedUnlessJSONAccept(t *testing.T) {
	srv, conf := newTestServer(t, Options{Quirks: Quirks{FormEncodedUnlessJSONAccept: true}})
	tok := fullFlow(t, conf) // x/oauth2 sends no Accept, so it parses the form body
	// x/oauth2's Extra parses form values (int64 here); JSON numbers come as float64.
	if _, ok := tok.Extra("expires_in").(int64); !ok || tok.Expiry.IsZero() {
		t.Fatalf("x/oauth2 did not get a form-encoded response: expires_in %T %v", tok.Extra("expires_in"), tok.Expiry)
	}

	form := url.Values{"grant_type": {GrantRefreshToken}, "refresh_token": {tok.RefreshToken}}
	resp, body := postToken(t, srv, form, "")
	vals, err := url.ParseQuery(string(body))
	if resp.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || err != nil ||
		vals.Get("access_token") == "" || vals.Get("token_type") == "" || vals.Get("expires_in") == "" {
		t.Fatalf("no Accept: %s %s", resp.Header.Get("Content-Type"), body)
	}

	form.Set("refresh_token", vals.Get("refresh_token"))
	resp, body = postToken(t, srv, form, "application/json")
	var m map[string]any
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || json.Unmarshal(body, &m) != nil || m["access_token"] == nil {
		t.Fatalf("Accept json: %s %s", resp.Header.Get("Content-Type"), body)
	}

	// Errors follow the same rule; without ErrorsWithHTTP200 the status stays 400.
	resp, body = postToken(t, srv, badRefreshForm(), "")
	vals, _ = url.ParseQuery(string(body))
	if resp.StatusCode != http.StatusBadRequest || vals.Get("error") != "invalid_grant" {
		t.Errorf("form error: %d %s", resp.StatusCode, body)
	}
}

func TestQuirkGitHubPreset(t *testing.T) {
	srv, conf := newTestServer(t, Options{Quirks: GitHubQuirks})
	resp, body := postToken(t, srv, badRefreshForm(), "")
	vals, _ := url.ParseQuery(string(body))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || vals.Get("error") != "invalid_grant" {
		t.Fatalf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	_, err := refresh(t, conf, "ory_rt_unknown.unknown")
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("x/oauth2 missed a 200 form error: %q", re.ErrorCode)
	}
}

func TestQuirkSlackOKFalse(t *testing.T) {
	srv, conf := newTestServer(t, Options{Quirks: SlackQuirks})
	tok := fullFlow(t, conf)
	if tok.Extra("ok") != true {
		t.Errorf("success lacks ok:true: %v", tok.Extra("ok"))
	}
	resp, body := postToken(t, srv, badRefreshForm(), "")
	var m map[string]any
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &m) != nil || m["ok"] != false || m["error"] != "invalid_refresh_token" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	resp, body = postToken(t, srv, url.Values{"grant_type": {GrantAuthorizationCode}, "code": {"nope"}, "redirect_uri": {testRedirect}}, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"error":"invalid_code"`) {
		t.Errorf("bad code: %d %s", resp.StatusCode, body)
	}
}

func TestQuirkOmitExpiresIn(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	if tok := fullFlow(t, conf); tok.Expiry.IsZero() {
		t.Fatal("control: expires_in missing without the quirk")
	}
	srv.SetQuirks(Quirks{OmitExpiresIn: true})
	tok := fullFlow(t, conf)
	if !tok.Expiry.IsZero() || tok.ExpiresIn != 0 || tok.Extra("expires_in") != nil {
		t.Errorf("expires_in still sent: %v %d", tok.Expiry, tok.ExpiresIn)
	}
}

func TestQuirkOmitRefreshTokenOnRefresh(t *testing.T) {
	srv, conf := newTestServer(t, Options{Quirks: GoogleQuirks})
	tok := fullFlow(t, conf) // the code grant still returns one
	resp, body := postToken(t, srv, url.Values{"grant_type": {GrantRefreshToken}, "refresh_token": {tok.RefreshToken}}, "")
	var m map[string]any
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &m) != nil {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if _, ok := m["refresh_token"]; ok || m["access_token"] == nil {
		t.Fatalf("refresh response: %s", body)
	}
	// Nothing rotated: the old refresh and access tokens keep working.
	if !srv.Introspect(tok.RefreshToken) || !srv.Introspect(tok.AccessToken) {
		t.Error("old tokens died although no new refresh token was handed out")
	}
	next, err := refresh(t, conf, tok.RefreshToken)
	if err != nil {
		t.Fatalf("second use of the kept refresh token: %v", err)
	}
	if next.AccessToken == tok.AccessToken {
		t.Error("same access token twice")
	}
	// Revoking the kept refresh token still ends the family.
	if code := revokeRFC7009(t, srv, tok.RefreshToken, testClientSecret); code != http.StatusOK {
		t.Fatalf("revoke: %d", code)
	}
	if _, err := refresh(t, conf, tok.RefreshToken); err == nil {
		t.Error("revoked refresh token still works")
	}
}

func TestQuirkSingleUseRefreshTokens(t *testing.T) {
	srv, conf := newTestServer(t, Options{Quirks: DiscordQuirks})
	tok := fullFlow(t, conf)
	next, err := refresh(t, conf, tok.RefreshToken)
	if err != nil || next.RefreshToken == tok.RefreshToken {
		t.Fatalf("rotation: %v", err)
	}
	_, err = refresh(t, conf, tok.RefreshToken)
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("reuse: %q", re.ErrorCode)
	}
	// Unlike the default (TestRefreshReuseRevokesFamily), the newest token survives.
	if !srv.Introspect(next.RefreshToken) || !srv.Introspect(next.AccessToken) {
		t.Fatal("single-use quirk revoked the family")
	}
	if _, err := refresh(t, conf, next.RefreshToken); err != nil {
		t.Errorf("newest refresh token: %v", err)
	}
}

func TestQuirkTokenDelay(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	tok := fullFlow(t, conf)
	srv.SetQuirks(Quirks{TokenDelay: 300 * time.Millisecond})
	start := time.Now()
	tok, err := refresh(t, conf, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("answered after %v, want >= 300ms", d)
	}
	// A client that gives up first sees a timeout; the server drops the
	// abandoned request, so nothing rotates.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	tok.Expiry = time.Now().Add(-time.Minute)
	_, err = conf.TokenSource(ctx, tok).Token()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("want deadline exceeded, got %v", err)
	}
	time.Sleep(400 * time.Millisecond) // past the delay: a request still running would have rotated by now
	if !srv.Introspect(tok.RefreshToken) {
		t.Error("abandoned request rotated the refresh token")
	}
}

func TestQuirkFailNextTokenCalls(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	tok := fullFlow(t, conf)
	srv.SetQuirks(Quirks{FailNextTokenCalls: 2, TokenFailStatus: http.StatusBadGateway})
	for i := 0; i < 2; i++ {
		_, err := refresh(t, conf, tok.RefreshToken)
		if re := retrieveError(t, err); re.Response.StatusCode != http.StatusBadGateway {
			t.Fatalf("call %d: status %d", i, re.Response.StatusCode)
		}
		if !srv.Introspect(tok.RefreshToken) {
			t.Fatal("an injected failure consumed the refresh token")
		}
	}
	if q := srv.Quirks(); q.FailNextTokenCalls != 0 || q.TokenFailStatus != http.StatusBadGateway {
		t.Errorf("Quirks() = %+v", q)
	}
	if _, err := refresh(t, conf, tok.RefreshToken); err != nil {
		t.Fatalf("third call: %v", err)
	}
	if srv.TokenCalls() != 4 || srv.TokenCallsFor(GrantRefreshToken) != 3 {
		t.Errorf("TokenCalls %d, refresh %d", srv.TokenCalls(), srv.TokenCallsFor(GrantRefreshToken))
	}

	srv.SetQuirks(Quirks{FailNextTokenCalls: 1}) // default status
	_, err := refresh(t, conf, "anything")
	if re := retrieveError(t, err); re.Response.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("default fail status %d", re.Response.StatusCode)
	}
}

// TestQuirksConcurrent flips quirks while refreshes run; -race checks the locking.
func TestQuirksConcurrent(t *testing.T) {
	srv, conf := newTestServer(t, Options{})
	toks := make([]string, 4)
	for i := range toks {
		toks[i] = fullFlow(t, conf).RefreshToken
	}
	var wg sync.WaitGroup
	for i := range toks {
		wg.Add(1)
		go func(rt string) {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				next, err := refresh(t, conf, rt)
				if err != nil {
					t.Errorf("refresh: %v", err)
					return
				}
				if next.RefreshToken != "" {
					rt = next.RefreshToken
				}
			}
		}(toks[i])
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for j := 0; j < 20; j++ {
			srv.SetQuirks(Quirks{OmitExpiresIn: j%2 == 0, SlackOKFalse: j%3 == 0})
			_ = srv.Quirks()
		}
	}()
	wg.Wait()
	if n := srv.TokenCallsFor(GrantRefreshToken); n != 20 {
		t.Errorf("refresh calls = %d, want 20", n)
	}
}
