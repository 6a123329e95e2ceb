package credentials

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/plugin/provider"
	"github.com/clankteam/credentials/testing/oauthserver"
)

// TestConcurrentUsesShareOneRefresh: 50 users of one credential at the
// moment its access token expires cause one token-endpoint call, and all
// get the new token.
func TestConcurrentUsesShareOneRefresh(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.connect("c")
	f.clock.advance(time.Hour) // the access token expires now
	// A slow provider keeps the refresh in flight while all users arrive.
	f.srv.SetQuirks(oauthserver.Quirks{TokenDelay: 200 * time.Millisecond})

	const users = 50
	tokens := make([]string, users)
	errs := make([]error, users)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start.Wait()
			tokens[i], errs[i] = f.b.oauthAccessToken(context.Background(), f.s, "c")
		}()
	}
	start.Done()
	wg.Wait()

	if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken); n != 1 {
		t.Fatalf("%d token-endpoint refreshes for %d concurrent users, want 1", n, users)
	}
	for i := range users {
		if errs[i] != nil {
			t.Fatalf("user %d: %v", i, errs[i])
		}
		if tokens[i] != tokens[0] {
			t.Fatalf("user %d got another token than user 0", i)
		}
	}
	if !f.srv.Introspect(tokens[0]) || f.cred("c").OAuth.AccessToken != tokens[0] {
		t.Fatalf("the shared token is not the stored, active one")
	}
}

// flakyStorage fails a fraction of writes, either before writing or after
// writing (a write that lands but reports an error, like a timeout after
// commit).
type flakyStorage struct {
	logical.Storage
	mu       sync.Mutex
	rng      *rand.Rand
	rate     float64
	failures int
}

var errInjected = errors.New("injected storage failure")

func (f *flakyStorage) roll() (before, after bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rate == 0 || f.rng.Float64() >= f.rate {
		return false, false
	}
	f.failures++
	if f.rng.IntN(2) == 0 {
		return true, false
	}
	return false, true
}

func (f *flakyStorage) setRate(r float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rate = r
}

func (f *flakyStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	before, after := f.roll()
	if before {
		return errInjected
	}
	if err := f.Storage.Put(ctx, e); err != nil || !after {
		return err
	}
	return errInjected
}

func (f *flakyStorage) Delete(ctx context.Context, key string) error {
	before, after := f.roll()
	if before {
		return errInjected
	}
	if err := f.Storage.Delete(ctx, key); err != nil || !after {
		return err
	}
	return errInjected
}

// TestRotatingGrantSurvivesStorageFailures runs 1,000 refresh cycles
// against single-use rotating refresh tokens while 15% of the
// engine's storage writes fail. After every cycle the grant must not be lost
// silently: a handed-out token works and its rotated refresh token is
// stored; a failed cycle says why, and the newest refresh token is stored,
// held in memory for the next attempt, or the credential needs attention.
func TestRotatingGrantSurvivesStorageFailures(t *testing.T) {
	cycles := 1000
	if testing.Short() {
		cycles = 200
	}
	f := newOAuthFixture(t, oauthserver.Options{Quirks: oauthserver.Quirks{SingleUseRefreshTokens: true}},
		map[string]interface{}{"single_use_refresh": true})
	f.connect("c")
	flaky := &flakyStorage{Storage: f.s, rng: rand.New(rand.NewPCG(1, 2))}
	ctx := context.Background()

	var failed, held, flagged, scheduled int
	for i := range cycles {
		f.clock.advance(time.Hour + time.Minute)
		flaky.setRate(0.15)
		var tok string
		var err error
		if i%5 == 4 {
			// Every fifth cycle is the scheduler's instead of a user's.
			err = f.b.refreshDue(ctx, flaky)
			scheduled++
		} else {
			tok, err = f.b.oauthAccessToken(ctx, flaky, "c")
		}
		flaky.setRate(0)

		c := f.cred("c")
		storedOK := f.srv.Introspect(c.OAuth.RefreshToken)
		if tok != "" {
			if !f.srv.Introspect(tok) {
				t.Fatalf("cycle %d: the handed-out access token does not work", i)
			}
			if !storedOK {
				t.Fatalf("cycle %d: an access token was handed out before its rotated refresh token was stored", i)
			}
			continue
		}
		if err != nil {
			failed++
			if err.Error() == "" {
				t.Fatalf("cycle %d: an error without a message", i)
			}
		}
		h, isHeld := f.b.oauth.heldFor("c")
		heldOK := isHeld && f.srv.Introspect(h.grant.RefreshToken)
		isFlagged := c.State == statusNeedsAttention && c.StateReason != ""
		switch {
		case storedOK:
		case heldOK:
			held++
		case isFlagged:
			flagged++
		default:
			t.Fatalf("cycle %d: the grant was lost silently (state %s, error %v)", i, c.State, err)
		}
	}
	t.Logf("%d cycles (%d by the scheduler), %d injected storage failures, %d failed cycles, %d with the grant held in memory, %d flagged",
		cycles, scheduled, flaky.failures, failed, held, flagged)
	if flaky.failures < cycles/10 || failed == 0 || failed == cycles {
		t.Fatalf("too few injected failures (%d) or failed cycles (%d) for the test to mean anything", flaky.failures, failed)
	}

	// With storage healthy again the credential works and its stored
	// refresh token is the provider's current one.
	tok, err := f.b.oauthAccessToken(ctx, f.s, "c")
	if err != nil || !f.srv.Introspect(tok) {
		t.Fatalf("after the failures: %v", err)
	}
	if c := f.cred("c"); !f.srv.Introspect(c.OAuth.RefreshToken) || c.State != statusActive {
		t.Fatalf("after the failures the stored grant is not the working one (state %s)", c.State)
	}
}

// TestRefreshFailuresAreClassified: a dead grant needs reconnecting and is
// no longer refreshed; a provider outage is retried with backoff, the old
// token used while it lasts, and needs attention only once it has expired.
// Long on purpose: one case per kind of provider failure.
func TestRefreshFailuresAreClassified(t *testing.T) {
	ctx := context.Background()
	t.Run("invalid_grant", func(t *testing.T) {
		f := newOAuthFixture(t, oauthserver.Options{}, nil)
		f.connect("c")
		c := f.cred("c")
		// Revoke the grant at the provider behind the engine's back.
		revokeAtProvider(t, f, c.OAuth.RefreshToken)
		f.clock.advance(time.Hour)
		if _, err := f.b.oauthAccessToken(ctx, f.s, "c"); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
			t.Fatalf("use after revocation: %v", err)
		}
		d := f.read("c")
		if d["status"] != statusNeedsAttention || !strings.HasPrefix(d["status_reason"].(string), "reconnect required") {
			t.Fatalf("status %v (%v), want needs_attention: reconnect required", d["status"], d["status_reason"])
		}
		calls := f.srv.TokenCalls()
		if _, err := f.b.oauthAccessToken(ctx, f.s, "c"); err == nil || !strings.Contains(err.Error(), "reconnect required") {
			t.Fatalf("second use: %v", err)
		}
		// Even with an access token that has not expired yet.
		c = f.cred("c")
		c.OAuth.Expiry = f.clock.now().Add(time.Hour)
		if err := f.b.saveCredential(ctx, f.s, c); err != nil {
			t.Fatal(err)
		}
		if _, err := f.b.oauthAccessToken(ctx, f.s, "c"); err == nil || !strings.Contains(err.Error(), "reconnect required") {
			t.Fatalf("use of a dead grant's unexpired token: %v", err)
		}
		f.clock.advance(24 * time.Hour)
		if err := f.b.refreshDue(ctx, f.s); err != nil {
			t.Fatal(err)
		}
		if f.srv.TokenCalls() != calls {
			t.Fatalf("a dead grant was refreshed again")
		}
		// Reconnecting makes it active again.
		f.connect("c")
		if d := f.read("c"); d["status"] != statusActive {
			t.Fatalf("after reconnect: %v (%v)", d["status"], d["status_reason"])
		}
	})
	t.Run("provider outage", func(t *testing.T) {
		f := newOAuthFixture(t, oauthserver.Options{}, nil)
		f.connect("c")
		old := f.cred("c").OAuth.AccessToken
		f.clock.advance(55 * time.Minute) // within refresh_ahead, still valid
		f.srv.SetQuirks(oauthserver.Quirks{FailNextTokenCalls: 1000, TokenFailStatus: 503})
		tok, err := f.b.oauthAccessToken(ctx, f.s, "c")
		if err != nil || tok != old {
			t.Fatalf("during an outage the still valid token must be used: %v", err)
		}
		f.b.oauth.background.Wait() // the refresh ran beside the call
		c := f.cred("c")
		if c.State != statusActive || c.OAuth.RetryAt.IsZero() || !strings.Contains(c.OAuth.RefreshError, "HTTP 503") {
			t.Fatalf("outage not recorded: state %s, retry %v, error %q", c.State, c.OAuth.RetryAt, c.OAuth.RefreshError)
		}
		// Backing off: more uses do not hammer the provider.
		calls := f.srv.TokenCalls()
		for range 10 {
			if _, err := f.b.oauthAccessToken(ctx, f.s, "c"); err != nil {
				t.Fatal(err)
			}
		}
		f.b.oauth.background.Wait()
		if f.srv.TokenCalls() != calls {
			t.Fatalf("%d refresh attempts during the backoff", f.srv.TokenCalls()-calls)
		}
		// The retry comes before the token expires; when it has expired
		// the credential needs attention.
		if !c.OAuth.RetryAt.Before(c.OAuth.Expiry) {
			t.Fatalf("retry at %v is not before expiry %v", c.OAuth.RetryAt, c.OAuth.Expiry)
		}
		f.clock.advance(6 * time.Minute)
		if _, err := f.b.oauthAccessToken(ctx, f.s, "c"); err == nil || !strings.Contains(err.Error(), "HTTP 503") {
			t.Fatalf("use after expiry during an outage: %v", err)
		}
		if d := f.read("c"); d["status"] != statusNeedsAttention || !strings.Contains(d["status_reason"].(string), "refresh failing") {
			t.Fatalf("status %v (%v)", d["status"], d["status_reason"])
		}
		// The provider recovers: the scheduler's retry succeeds.
		f.srv.SetQuirks(oauthserver.Quirks{})
		f.clock.advance(time.Hour)
		if err := f.b.refreshDue(ctx, f.s); err != nil {
			t.Fatal(err)
		}
		c = f.cred("c")
		if c.State != statusActive || c.OAuth.RefreshFailures != 0 || !f.srv.Introspect(c.OAuth.AccessToken) {
			t.Fatalf("after recovery: state %s (%s), failures %d", c.State, c.StateReason, c.OAuth.RefreshFailures)
		}
	})
}

// revokeAtProvider revokes token at the test server as the app would.
func revokeAtProvider(t *testing.T, f *oauthFixture, token string) {
	t.Helper()
	svc, _ := f.b.getService(context.Background(), f.s, "idp")
	app, _ := getApp(context.Background(), f.s, "idp-app")
	r := f.b.oauth.http.Revoke(context.Background(), "idp", svc.OAuth, app.client(), provider.Tokens{Refresh: token})
	if len(r.Revoked) != 1 || !f.srv.IsRevoked(token) {
		t.Fatalf("revoking at the provider failed: %s", r.Reason)
	}
}

// readCountingStorage counts reads (Get and List).
type readCountingStorage struct {
	logical.Storage
	reads atomic.Int64
}

func (c *readCountingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	c.reads.Add(1)
	return c.Storage.Get(ctx, key)
}

func (c *readCountingStorage) List(ctx context.Context, prefix string) ([]string, error) {
	c.reads.Add(1)
	return c.Storage.List(ctx, prefix)
}

func TestScheduledRefresh(t *testing.T) {
	ctx := context.Background()
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	for _, n := range []string{"a", "b", "c"} {
		f.connect(n)
	}
	f.createCred("never-connected")
	cs := &readCountingStorage{Storage: f.s}

	// Nothing due: the first tick reads the schedule's bound (and files
	// what is unfiled, and looks for refresh records); later ticks read
	// nothing at all.
	tick := func() {
		t.Helper()
		if err := f.b.periodic(ctx, &logical.Request{Storage: cs}); err != nil {
			t.Fatal(err)
		}
	}
	tick()
	cs.reads.Store(0)
	for range 5 {
		f.clock.advance(time.Minute)
		tick()
	}
	if n := cs.reads.Load(); n != 0 {
		t.Fatalf("ticks with nothing due read storage %d times", n)
	}
	if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken); n != 0 {
		t.Fatalf("%d refreshes with nothing due", n)
	}

	// refresh_ahead (10m) before expiry, every grant is refreshed by one
	// tick, and filed again an hour later.
	f.clock.advance(46 * time.Minute)
	if err := f.b.refreshDue(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken); n != 3 {
		t.Fatalf("%d refreshes, want 3", n)
	}
	for _, n := range []string{"a", "b", "c"} {
		g := f.cred(n).OAuth
		if !aboutAt(g.Expiry, f.clock.now().Add(time.Hour)) || !f.srv.Introspect(g.AccessToken) {
			t.Fatalf("%s not refreshed by the tick", n)
		}
		if want := g.Expiry.Add(-defaultRefreshAhead); !g.RefreshDue.Equal(want) {
			t.Fatalf("%s filed for %v, want %v", n, g.RefreshDue, want)
		}
	}
	// The handled entries are gone: only the next minute is filed.
	jobs, err := dueEntries(ctx, f.s, "~")
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 3 {
		t.Fatalf("due index after the tick: %v", jobs)
	}
	for _, j := range jobs {
		if due := f.cred(j.name).OAuth.RefreshDue; j.bucket != dueBucket(due) || !aboutAt(due, f.clock.now().Add(50*time.Minute)) {
			t.Fatalf("due index after the tick: %v", jobs)
		}
	}
	// A deleted credential's entry goes with it.
	mustOK(t, do(t, f.b, f.s, logical.DeleteOperation, "creds/a", nil))
	if jobs, _ := dueEntries(ctx, f.s, "~"); len(jobs) != 2 {
		t.Fatalf("due index after deleting a: %v", jobs)
	}
	f.clock.advance(51 * time.Minute)
	if err := f.b.refreshDue(ctx, f.s); err != nil {
		t.Fatal(err)
	}
	if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken); n != 5 {
		t.Fatalf("%d refreshes, want 5", n)
	}
	if jobs, _ := dueEntries(ctx, f.s, "~"); len(jobs) != 2 {
		t.Fatalf("due index: %v", jobs)
	}
}

// TestUnfiledGrantIsFiledByTheFirstTick: a crash between storing a
// credential and filing it is repaired by a new backend's first tick.
func TestUnfiledGrantIsFiledByTheFirstTick(t *testing.T) {
	ctx := context.Background()
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.connect("c")
	if err := f.s.Delete(ctx, dueEntryKey(dueBucket(f.cred("c").OAuth.RefreshDue), "c")); err != nil {
		t.Fatal(err)
	}
	// A new backend over the same storage, as after a restart.
	b2, _, _ := getTestBackend(t)
	b2.now = f.clock.now
	if err := b2.refreshDue(ctx, f.s); err != nil {
		t.Fatal(err)
	}
	f.clock.advance(51 * time.Minute)
	if err := b2.refreshDue(ctx, f.s); err != nil {
		t.Fatal(err)
	}
	if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken); n != 1 {
		t.Fatalf("the unfiled grant was refreshed %d times, want 1", n)
	}
}

func TestKeepAliveRefresh(t *testing.T) {
	ctx := context.Background()
	// Day-long access tokens, but the provider drops refresh tokens unused
	// for a while: the catalog's keep_alive refreshes before that.
	f := newOAuthFixture(t, oauthserver.Options{AccessTokenLifespan: 24 * time.Hour}, map[string]interface{}{"keep_alive": "2h"})
	f.connect("c")
	f.clock.advance(time.Hour)
	if err := f.b.refreshDue(ctx, f.s); err != nil {
		t.Fatal(err)
	}
	if f.srv.TokenCallsFor(oauthserver.GrantRefreshToken) != 0 {
		t.Fatalf("refreshed before the keep-alive was due")
	}
	f.clock.advance(time.Hour + time.Minute)
	if err := f.b.refreshDue(ctx, f.s); err != nil {
		t.Fatal(err)
	}
	if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken); n != 1 {
		t.Fatalf("%d keep-alive refreshes, want 1", n)
	}
	if g := f.cred("c").OAuth; !g.RefreshedAt.Equal(f.clock.now()) || !g.RefreshDue.Equal(f.clock.now().Add(2*time.Hour)) {
		t.Fatalf("after keep-alive: refreshed %v, next %v", g.RefreshedAt, g.RefreshDue)
	}
}

// TestDueEntryOfAGoneCredentialIsDropped: an entry whose credential is gone
// (an older version's delete left it, or the name now holds another type)
// costs a tick one read: no refresh, no failure logged, and the entry is
// removed.
func TestDueEntryOfAGoneCredentialIsDropped(t *testing.T) {
	ctx := context.Background()
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	var logged strings.Builder
	f.b.logger = hclog.New(&hclog.LoggerOptions{Output: &logged, Level: hclog.Info})
	f.connect("live")
	mustOK(t, do(t, f.b, f.s, logical.CreateOperation, "creds/now-a-key", map[string]interface{}{
		"type": "api_key", "service": "stripe", "api_key": "sk_test_0123456789abcdef",
	}))
	bucket := dueBucket(f.clock.now())
	for _, name := range []string{"gone", "now-a-key"} {
		if err := f.s.Put(ctx, &logical.StorageEntry{Key: dueEntryKey(bucket, name)}); err != nil {
			t.Fatal(err)
		}
	}
	keyRevision := mustOK(t, do(t, f.b, f.s, logical.ReadOperation, "creds/now-a-key", nil)).Data["revision"]

	f.clock.advance(time.Minute)
	if err := f.b.refreshDue(ctx, f.s); err != nil {
		t.Fatal(err)
	}
	jobs, err := dueEntries(ctx, f.s, "~")
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0].name != "live" {
		t.Fatalf("due index after the tick: %v", jobs)
	}
	if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken); n != 0 {
		t.Fatalf("%d refreshes for entries of gone credentials", n)
	}
	if got := mustOK(t, do(t, f.b, f.s, logical.ReadOperation, "creds/now-a-key", nil)).Data["revision"]; got != keyRevision {
		t.Fatalf("the tick changed the api_key credential: revision %v, was %v", got, keyRevision)
	}
	if strings.Contains(logged.String(), "failed") {
		t.Fatalf("a gone credential's entry was logged as a failure:\n%s", logged.String())
	}
}
