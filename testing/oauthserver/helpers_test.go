package oauthserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

const (
	testClientID     = "agent-app"
	testClientSecret = "agent-app-secret-0123456789"
	testRedirect     = "http://127.0.0.1:9/callback" // never contacted: redirects are captured
	testState        = "state-0123456789abcdef"
)

// logSink collects Logf output so tests can check nothing secret is logged.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (l *logSink) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func newTestServer(t *testing.T, opts Options) (*Server, *oauth2.Config) {
	t.Helper()
	if opts.Clients == nil {
		opts.Clients = []Client{{ID: testClientID, Secret: testClientSecret, RedirectURIs: []string{testRedirect}}}
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL(), "http://127.0.0.1:") {
		t.Fatalf("server listens on %s, want 127.0.0.1", srv.URL())
	}
	conf := &oauth2.Config{
		ClientID:     testClientID,
		ClientSecret: testClientSecret,
		RedirectURL:  testRedirect,
		Scopes:       []string{"repo", "user:email"},
		Endpoint:     oauth2.Endpoint{AuthURL: srv.AuthURL(), TokenURL: srv.TokenURL()},
	}
	return srv, conf
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// noRedirect stops at the authorization server's redirect so the test can
// read the code from Location, as a browser would hand it to the callback.
var noRedirect = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// callbackParams checks resp is a redirect to the registered callback and
// returns its query.
func callbackParams(t *testing.T, resp *http.Response) url.Values {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("want redirect, got %d: %s", resp.StatusCode, b)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatalf("bad Location: %v", err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != testRedirect {
		t.Fatalf("redirected to %s, want %s", got, testRedirect)
	}
	return loc.Query()
}

// authCode runs the authorization request with auto-approval and returns the code.
func authCode(t *testing.T, conf *oauth2.Config, opts ...oauth2.AuthCodeOption) string {
	t.Helper()
	u := conf.AuthCodeURL(testState, append(opts, oauth2.SetAuthURLParam("auto", "approve"))...)
	resp, err := noRedirect.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	q := callbackParams(t, resp)
	if q.Get("error") != "" {
		t.Fatalf("authorization failed: %s: %s", q.Get("error"), q.Get("error_description"))
	}
	if q.Get("state") != testState {
		t.Fatalf("state = %q, want %q", q.Get("state"), testState)
	}
	if q.Get("code") == "" {
		t.Fatal("no code in callback")
	}
	return q.Get("code")
}

// fullFlow gets a token through code + PKCE.
func fullFlow(t *testing.T, conf *oauth2.Config) *oauth2.Token {
	t.Helper()
	verifier := oauth2.GenerateVerifier()
	code := authCode(t, conf, oauth2.S256ChallengeOption(verifier))
	tok, err := conf.Exchange(ctxT(t), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Fatalf("token lacks access or refresh token: %+v", tok)
	}
	return tok
}

// refresh uses rt once through x/oauth2, as the engine will.
func refresh(t *testing.T, conf *oauth2.Config, rt string) (*oauth2.Token, error) {
	t.Helper()
	return conf.TokenSource(ctxT(t), &oauth2.Token{RefreshToken: rt}).Token()
}

// retrieveError asserts err is an oauth2 token error and returns it.
func retrieveError(t *testing.T, err error) *oauth2.RetrieveError {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("want *oauth2.RetrieveError, got %T: %v", err, err)
	}
	return re
}

// postToken sends a raw token request as the test client, so tests can see
// the wire format.
func postToken(t *testing.T, srv *Server, form url.Values, accept string) (*http.Response, []byte) {
	t.Helper()
	return postTokenAuth(t, srv, true, form, accept)
}

// postTokenAuth is postToken with client authentication optional (Google's
// JWT-bearer requests carry none).
func postTokenAuth(t *testing.T, srv *Server, clientAuth bool, form url.Values, accept string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.TokenURL(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if clientAuth {
		req.SetBasicAuth(testClientID, testClientSecret)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func userinfo(t *testing.T, srv *Server, accessToken string) (int, Identity) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.UserinfoURL(), nil)
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var id Identity
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&id); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, id
}
