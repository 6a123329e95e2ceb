package portal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clankteam/credentials/portal/provision"
)

func TestSessionCookieAttributes(t *testing.T) {
	for _, tc := range []struct {
		publicURL  string
		wantSecure bool
	}{{"http://portal.test", false}, {"https://portal.example", true}} {
		s, _, _ := testServer(t)
		s.publicURL, _ = url.Parse(tc.publicURL)
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/", nil)
		if err := s.writeSession(rec, req, &session{Token: "t", Expires: time.Now().Add(time.Hour).Unix()}); err != nil {
			t.Fatal(err)
		}
		c := rec.Result().Cookies()[0]
		if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure != tc.wantSecure || c.Path != "/" {
			t.Errorf("%s: cookie %+v: want HttpOnly, SameSite=Lax, Secure=%v", tc.publicURL, c, tc.wantSecure)
		}
		if strings.Contains(c.Value, "t\"") || c.MaxAge <= 0 {
			t.Errorf("cookie value or age wrong: %+v", c)
		}
	}
}

func TestSealedValues(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	sl, err := newSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newSealer(bytes.Repeat([]byte{2}, 32))
	token := "hvs.CANARY-token-1234"
	sealed, err := sl.seal(sessionCookie, &session{Token: token, User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, "CANARY") || strings.Contains(sealed, "alice") {
		t.Fatal("the sealed cookie shows its content")
	}
	var got session
	if err := sl.open(sessionCookie, sealed, &got); err != nil || got.Token != token {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	tampered := []byte(sealed)
	tampered[len(tampered)/2] ^= 1
	for name, tc := range map[string]struct {
		s      *sealer
		cookie string
		value  string
	}{
		"tampered":           {sl, sessionCookie, string(tampered)},
		"another key":        {other, sessionCookie, sealed},
		"sealed for another": {sl, flashCookie, sealed},
		"not base64":         {sl, sessionCookie, "!!!"},
		"too short":          {sl, sessionCookie, "AQ"},
		"empty":              {sl, sessionCookie, ""},
	} {
		if err := tc.s.open(tc.cookie, tc.value, &got); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
	if _, err := newSealer([]byte("short")); err == nil {
		t.Error("a short key was accepted")
	}
}

func TestExpiredSessionIsSignedOut(t *testing.T) {
	s, calls, _ := testServer(t)
	req := httptest.NewRequest("GET", "http://portal.test/orgs/acme/creds", nil)
	req.AddCookie(sessionCookieFor(t, s, &session{Token: "t", Expires: time.Now().Add(-time.Second).Unix()}))
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), "/signin") || calls.Load() != 0 {
		t.Errorf("expired session: status %d, location %q, vault calls %d", rec.Code, rec.Header().Get("Location"), calls.Load())
	}
}

// TestTakePendingSaysWhy: each refused state is told apart, as the
// engine tells them apart for the CLI.
func TestTakePendingSaysWhy(t *testing.T) {
	now := time.Now()
	sess := &session{Pending: []pendingConnect{
		{Org: "a", Cred: "x", State: "s1", Expires: now.Add(time.Minute).Unix()},
		{Org: "a", Cred: "y", State: "s2", Expires: now.Add(-time.Minute).Unix()},
	}}
	for _, tc := range []struct{ state, why string }{
		{"nope", stateUnknown}, {"s2", stateExpired}, {"s1", ""}, {"s1", stateUsed}, {"s2", stateUsed},
	} {
		if _, why := sess.takePendingWhy(tc.state, now); why != tc.why {
			t.Errorf("%s: %q, want %q", tc.state, why, tc.why)
		}
	}
	for _, why := range []string{stateUnknown, stateExpired, stateUsed} {
		if msg := callbackRefusal(true, true, why); !strings.Contains(msg, map[string]string{
			stateUnknown: "does not match", stateExpired: "expired", stateUsed: "already used"}[why]) {
			t.Errorf("%s: %s", why, msg)
		}
	}
}

func TestTakePending(t *testing.T) {
	now := time.Now()
	sess := &session{Pending: []pendingConnect{
		{Org: "a", Cred: "x", State: "s1", Expires: now.Add(time.Minute).Unix()},
		{Org: "a", Cred: "y", State: "s2", Expires: now.Add(-time.Minute).Unix()},
	}}
	if _, ok := sess.takePending("nope", now); ok {
		t.Error("an unknown state was accepted")
	}
	if _, ok := sess.takePending("s2", now); ok {
		t.Error("an expired pending connect was accepted")
	}
	pc, ok := sess.takePending("s1", now)
	if !ok || pc.Cred != "x" {
		t.Fatalf("the live pending connect was not found: %+v", pc)
	}
	if _, ok := sess.takePending("s1", now); ok {
		t.Error("a pending connect was used twice")
	}
}

func TestSignInRateLimited(t *testing.T) {
	s, _, _ := testServer(t)
	start := time.Now()
	s.now = func() time.Time { return start }
	attempt := func(user string) *httptest.ResponseRecorder {
		body := url.Values{"method": {"userpass"}, "username": {user}, "password": {"wrong-password"}}.Encode()
		req := httptest.NewRequest("POST", "http://portal.test/signin", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = "192.0.2.1:1234"
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec
	}
	for i := 0; i < signInBurst; i++ {
		if rec := attempt("alice"); rec.Code == http.StatusTooManyRequests {
			t.Fatalf("attempt %d was limited", i+1)
		}
	}
	rec := attempt("alice")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("attempt %d: status %d, Retry-After %q", signInBurst+1, rec.Code, rec.Header().Get("Retry-After"))
	}
	if !strings.Contains(rec.Body.String(), "Too many sign-in attempts") {
		t.Error("the limited page does not say why")
	}
	// Another user from the same address is limited too (the address's
	// bucket is empty); the clock moving on refills it.
	if rec := attempt("bob"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("another user from the same address: %d", rec.Code)
	}
	s.now = func() time.Time { return start.Add(time.Minute) }
	if rec := attempt("carol"); rec.Code == http.StatusTooManyRequests {
		t.Error("still limited a minute later")
	}
}

// TestSignInFailuresPerAccountAndAddress: wrong passwords are counted per
// account and client address, below Vault's lockout threshold, so one
// address cannot lock a person out; the person at another address signs
// in. Behind a trusted proxy the address is the forwarded one; anyone
// else's X-Forwarded-For is ignored. A locked account is told so.
func TestSignInFailuresPerAccountAndAddress(t *testing.T) {
	var locked atomic.Bool
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case locked.Load():
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"errors":["permission denied"]}`))
		case strings.Contains(r.URL.Path, "/login/alice"):
			body, _ := io.ReadAll(r.Body)
			if strings.Contains(string(body), "right-password") {
				_, _ = w.Write([]byte(`{"auth":{"client_token":"hvs.alice","lease_duration":3600}}`))
				return
			}
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"errors":["invalid username or password"]}`))
		default:
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	t.Cleanup(vault.Close)
	s, err := NewServer(Config{VaultAddr: vault.URL, PublicURL: "http://portal.test", SessionKey: bytes.Repeat([]byte{7}, 32),
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	attempt := func(remote, forwarded, password string) *httptest.ResponseRecorder {
		body := url.Values{"method": {"userpass"}, "username": {"alice"}, "password": {password}}.Encode()
		req := httptest.NewRequest("POST", "http://portal.test/signin", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = remote + ":1234"
		if forwarded != "" {
			req.Header.Set("X-Forwarded-For", forwarded)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec
	}
	for i := 0; i < signInFailuresPerAddress; i++ {
		if rec := attempt("10.0.0.1", "198.51.100.7", "wrong"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, rec.Code)
		}
	}
	rec := attempt("10.0.0.1", "198.51.100.7", "right-password")
	if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "from your address") {
		t.Fatalf("after %d failures from one address: %d", signInFailuresPerAddress, rec.Code)
	}
	if signInFailuresPerAddress >= provision.UserLockoutThreshold {
		t.Fatalf("one address may fail %d times, Vault locks at %d", signInFailuresPerAddress, provision.UserLockoutThreshold)
	}
	// The person, at another address behind the same proxy, signs in.
	if rec := attempt("10.0.0.1", "203.0.113.9", "right-password"); rec.Code != http.StatusSeeOther {
		t.Errorf("alice from another address: %d", rec.Code)
	}
	// A forwarded header from an untrusted peer changes nothing.
	for i := 0; i < signInFailuresPerAddress; i++ {
		attempt("192.0.2.5", "203.0.113.1", "wrong")
	}
	if rec := attempt("192.0.2.5", "203.0.113.2", "right-password"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("an untrusted X-Forwarded-For moved the address: %d", rec.Code)
	}
	locked.Store(true)
	if rec := attempt("10.0.0.1", "203.0.113.50", "right-password"); rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "locked") {
		t.Errorf("locked account: %d %.200s", rec.Code, rec.Body.String())
	}
}

// TestSessionKeyRotation: a new key seals at once while values sealed with
// the old one still open, so rotating signs no one out; a key taken out of
// the ring opens nothing any more.
func TestSessionKeyRotation(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	before, err := newKeyRing([]SessionKey{{Key: oldKey}})
	if err != nil {
		t.Fatal(err)
	}
	sealedOld, _ := before.seal(sessionCookie, &session{User: "alice"})
	during, err := newKeyRing([]SessionKey{{ID: "k2", Key: newKey}, {Key: oldKey}})
	if err != nil {
		t.Fatal(err)
	}
	var got session
	if err := during.open(sessionCookie, sealedOld, &got); err != nil || got.User != "alice" {
		t.Fatalf("a session sealed with the old key: %v", err)
	}
	sealedNew, _ := during.seal(sessionCookie, &session{User: "bob"})
	after, _ := newKeyRing([]SessionKey{{ID: "k2", Key: newKey}})
	if err := after.open(sessionCookie, sealedNew, &got); err != nil || got.User != "bob" {
		t.Fatalf("the new key does not open what it sealed: %v", err)
	}
	if err := after.open(sessionCookie, sealedOld, &got); err == nil {
		t.Fatal("a key taken out of the ring still opens its values")
	}
	// Values of the first format, before keys had ids, still open.
	block, _ := aes.NewCipher(oldKey)
	aead, _ := cipher.NewGCM(block)
	nonce := make([]byte, aead.NonceSize())
	plain, _ := json.Marshal(&session{User: "carol"})
	v1 := base64.RawURLEncoding.EncodeToString(aead.Seal(append([]byte{sealVersionNoID}, nonce...), nonce, plain, []byte(sessionCookie)))
	if err := during.open(sessionCookie, v1, &got); err != nil || got.User != "carol" {
		t.Fatalf("a value of the first format: %v", err)
	}
	if _, err := newKeyRing([]SessionKey{{ID: "a", Key: oldKey}, {ID: "a", Key: newKey}}); err == nil {
		t.Fatal("two keys with one id were accepted")
	}
}

// TestHostPrefixedCookiesUnderTLS: behind https the session and flash
// cookies carry the __Host- prefix (Secure, Path=/, no Domain), so a
// sibling subdomain cannot plant one; over plain http they keep their
// names.
func TestHostPrefixedCookiesUnderTLS(t *testing.T) {
	for _, tc := range []struct{ public, want string }{
		{"https://portal.example", "__Host-portal_session"},
		{"http://portal.test", "portal_session"},
	} {
		s, err := NewServer(Config{VaultAddr: "http://127.0.0.1:1", PublicURL: tc.public, SessionKey: bytes.Repeat([]byte{7}, 32),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		if err := s.writeSession(rec, req, &session{Token: "hvs.test", User: "alice", Expires: time.Now().Add(time.Hour).Unix()}); err != nil {
			t.Fatal(err)
		}
		cookies := rec.Result().Cookies()
		if len(cookies) != 1 || cookies[0].Name != tc.want || cookies[0].Path != "/" || cookies[0].Domain != "" ||
			cookies[0].Secure != strings.HasPrefix(tc.public, "https") {
			t.Fatalf("%s: cookies %+v", tc.public, cookies)
		}
		back := httptest.NewRequest(http.MethodGet, "/", nil)
		back.AddCookie(cookies[0])
		if got := s.readSession(back); got == nil || got.User != "alice" {
			t.Errorf("%s: the session does not read back", tc.public)
		}
	}
}
