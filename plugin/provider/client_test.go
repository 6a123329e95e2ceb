package provider

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/clankteam/credentials/testing/oauthserver"
)

const (
	testClient   = "engine"
	testSecret   = "client-secret-CANARY-31"
	testRedirect = "https://portal.example/oauth/callback"
)

// newIdP is the fosite test server with one confidential client, and its
// Spec.
func newIdP(t *testing.T, opts oauthserver.Options) (*oauthserver.Server, *Spec) {
	t.Helper()
	opts.Clients = []oauthserver.Client{{ID: testClient, Secret: testSecret, RedirectURIs: []string{testRedirect}}}
	srv, err := oauthserver.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv, &Spec{AuthURL: srv.AuthURL(), TokenURL: srv.TokenURL(), RevokeURL: srv.RevokeURL(), RevokeStyle: RevokeRFC7009,
		UserinfoURL: srv.UserinfoURL(), PKCE: true, DefaultScopes: []string{"openid"}}
}

// code runs the authorize request with auto-approval, as a browser would,
// and returns the callback's query.
func code(t *testing.T, authURL string) url.Values {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL + "&auto=approve")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("no code in the redirect %q", resp.Header.Get("Location"))
	}
	return loc.Query()
}

// TestHTTPClientLifecycle: authorize with PKCE, exchange, refresh (rotated),
// account, revoke, each against a real OAuth server.
func TestHTTPClientLifecycle(t *testing.T) {
	srv, spec := newIdP(t, oauthserver.Options{})
	h := New(&http.Client{}, 10*time.Second)
	app := App{ClientID: testClient, ClientSecret: testSecret}
	ctx := context.Background()

	verifier := "verifier-0123456789-0123456789-0123456789-abcdef"
	u := h.AuthCodeURL(spec, app, AuthRequest{RedirectURL: testRedirect, State: "state-0123456789", Verifier: verifier, Scopes: []string{"openid", "offline"}})
	for _, want := range []string{"code_challenge_method=S256", "state=state-0123456789", "scope=openid+offline", "client_id=engine"} {
		if !strings.Contains(u, want) {
			t.Errorf("authorize URL lacks %s: %s", want, u)
		}
	}
	q := code(t, u)
	tok, pe := h.Exchange(ctx, spec, app, testRedirect, q.Get("code"), verifier)
	if pe != nil {
		t.Fatal(pe)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" || tok.ExpiresIn <= 0 {
		t.Fatalf("token: %+v", tok)
	}

	next, pe := h.Refresh(ctx, spec, app, tok.RefreshToken)
	if pe != nil {
		t.Fatal(pe)
	}
	if next.RefreshToken == "" || next.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh did not rotate: %+v", next)
	}

	acct, err := h.Account(ctx, spec, next.AccessToken)
	if err != nil || acct.Subject == "" || acct.Label == "" {
		t.Fatalf("account: %+v %v", acct, err)
	}

	r := h.Revoke(ctx, "IdP", spec, app, Tokens{Access: next.AccessToken, Refresh: next.RefreshToken})
	if len(r.Revoked) != 2 || !srv.IsRevoked(next.RefreshToken) {
		t.Fatalf("revoke: %+v", r)
	}
	if _, pe := h.Refresh(ctx, spec, app, next.RefreshToken); pe == nil || pe.Kind != GrantDead {
		t.Fatalf("a revoked refresh token: %v", pe)
	}
	if _, pe := h.Exchange(ctx, spec, app, testRedirect, q.Get("code"), verifier); pe == nil || pe.Kind != GrantDead || strings.Contains(pe.Msg, q.Get("code")) {
		t.Fatalf("a spent code: %v", pe)
	}
}

// TestErrorsNameNoSecret: a provider that quotes the request back has the
// secrets scrubbed from the message.
func TestErrorsNameNoSecret(t *testing.T) {
	e := statusError("refresh", 400, "invalid_request", "refresh_token rt-SECRET-1 and client_secret "+url.QueryEscape("s/ecret+2")+" are wrong", nil, "rt-SECRET-1", "s/ecret+2")
	if strings.Contains(e.Msg, "rt-SECRET-1") || strings.Contains(e.Msg, url.QueryEscape("s/ecret+2")) || e.Kind != Refused {
		t.Fatalf("%+v", e)
	}
	for code, kind := range map[string]Kind{"invalid_grant": GrantDead, "token_inactive": GrantDead, "temporarily_unavailable": Transient, "invalid_client": Refused} {
		if k := statusError("refresh", 400, code, "", nil).Kind; k != kind {
			t.Errorf("%s: kind %d, want %d", code, k, kind)
		}
	}
	if statusError("refresh", 503, "", "", nil).Kind != Transient {
		t.Error("a 503 is not transient")
	}
}

// TestQuirkAdapters: answers in the providers' own shapes reach x/oauth2 in
// RFC 6749's.
func TestQuirkAdapters(t *testing.T) {
	form := &tokenResponse{status: 200, header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, body: []byte("access_token=a&expires_in=3600&scope=repo")}
	formToJSON(form)
	if string(form.body) != `{"access_token":"a","expires_in":3600,"scope":"repo"}` {
		t.Errorf("form: %s", form.body)
	}
	slack := &tokenResponse{status: 200, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(`{"ok": false, "error": "invalid_refresh_token"}`)}
	okFieldToStatus(slack)
	if slack.status != 400 || string(slack.body) != `{"error":"invalid_refresh_token"}` {
		t.Errorf("slack: %d %s", slack.status, slack.body)
	}
	gh := &tokenResponse{status: 200, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(`{"error": "bad_refresh_token"}`)}
	errorBodyToStatus(gh)
	if gh.status != 400 {
		t.Errorf("github: %d", gh.status)
	}
}

func TestAccountOf(t *testing.T) {
	for _, tc := range []struct {
		in   map[string]any
		want Account
	}{
		{map[string]any{"sub": "abc", "email": "a@x.example"}, Account{Subject: "abc", Label: "a@x.example"}},
		{map[string]any{"id": float64(42), "login": "octo"}, Account{Subject: "42", Label: "octo"}},
		{map[string]any{"sub": "only"}, Account{Subject: "only", Label: "only"}},
		{map[string]any{"sub": "x\ny", "email": "e@x.example"}, Account{Label: "e@x.example"}},
	} {
		if got := accountOf(tc.in); got != tc.want {
			t.Errorf("%v: %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// TestFakeIsAProvider: the fake behaves as a single-use provider does.
func TestFakeIsAProvider(t *testing.T) {
	f := NewFake()
	f.Rotate = true
	ctx := context.Background()
	f.AddCode("c1")
	tok, pe := f.Exchange(ctx, &Spec{}, App{}, "", "c1", "")
	if pe != nil {
		t.Fatal(pe)
	}
	if _, pe := f.Exchange(ctx, &Spec{}, App{}, "", "c1", ""); pe == nil || pe.Kind != GrantDead {
		t.Fatal("a code worked twice")
	}
	next, pe := f.Refresh(ctx, &Spec{}, App{}, tok.RefreshToken)
	if pe != nil || next.RefreshToken == tok.RefreshToken {
		t.Fatal("no rotation")
	}
	if _, pe := f.Refresh(ctx, &Spec{}, App{}, tok.RefreshToken); pe == nil || pe.Kind != GrantDead {
		t.Fatal("a spent refresh token worked")
	}
	f.Revoke(ctx, "Fake", &Spec{}, App{}, Tokens{Refresh: next.RefreshToken})
	if f.Live(next.RefreshToken) {
		t.Fatal("revoked token still live")
	}
}

// TestRevokeBearer: Dropbox's style, the access token as its own bearer.
func TestRevokeBearer(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
		if got != "Bearer at-1" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	h := New(&http.Client{}, 5*time.Second)
	spec := &Spec{RevokeURL: srv.URL, RevokeStyle: RevokeBearer}
	r := h.Revoke(context.Background(), "Dropbox", spec, App{}, Tokens{Access: "at-1", Refresh: "rt-1"})
	if got != "Bearer at-1" || len(r.Revoked) != 2 {
		t.Fatalf("receipt %+v, header %q", r, got)
	}
	r = h.Revoke(context.Background(), "Dropbox", spec, App{}, Tokens{Access: "wrong"})
	if len(r.NotRevoked) != 1 || !strings.Contains(r.Reason, "401") {
		t.Fatalf("a refused revocation: %+v", r)
	}
}

// TestUnreachableProviderIsWordedPlainly: a provider that cannot be reached
// is named by host and reason, never by the raw dial error (which names the
// resolver's address or the machine's own sockets).
func TestUnreachableProviderIsWordedPlainly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	c := New(&http.Client{}, 2*time.Second)
	_, perr := c.Discover(context.Background(), "http://"+closed+"/.well-known/openid-configuration")
	if perr == nil || perr.Kind != Transient {
		t.Fatalf("discovery of a closed port: %v", perr)
	}
	if perr.Msg != "discovery: cannot connect to "+closed {
		t.Errorf("the message: %q", perr.Msg)
	}
}
