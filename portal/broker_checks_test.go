package portal

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/clankteam/credentials/internal/egress"
)

// scriptedVault answers checks from a test: each check blocks until the
// test releases it with the capabilities to answer.
type scriptedVault struct {
	asked   chan []string
	answers chan map[string][]string
}

func (v *scriptedVault) ask(_ context.Context, token string, paths []string) (map[string][]string, checkFail) {
	v.asked <- slices.Clone(paths)
	caps := <-v.answers
	if caps == nil {
		return nil, checkFail{status: http.StatusForbidden, errs: []string{"permission denied", "invalid token"}}
	}
	return caps, checkFail{}
}

// waitingCalls counts the calls waiting for the token's next checks.
func waitingCalls(c *capabilityChecks, token string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	if tc := c.byToken[token]; tc != nil {
		for _, w := range tc.waiting {
			n += w.calls
		}
	}
	return n
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestCallsOfATokenShareTheNextCheck: calls that arrive while a check of
// their token is in flight are decided together by the next check, which
// is sent after they arrived: the answer of the check in flight (here a
// token still allowed) never decides them (here, revoked since).
func TestCallsOfATokenShareTheNextCheck(t *testing.T) {
	v := &scriptedVault{asked: make(chan []string, 8), answers: make(chan map[string][]string, 8)}
	checks := newCapabilityChecks(v.ask)
	h := &brokerHandler{checks: checks}
	ctx := context.Background()
	call := func(path string) *egress.Error {
		return h.checkCapability(ctx, &edgeCall{token: "tok", org: "acme", cred: "gh"}, http.MethodGet, path)
	}

	first := make(chan *egress.Error, 1)
	go func() { first <- call("a") }()
	if got := <-v.asked; !slices.Equal(got, []string{"a"}) {
		t.Fatalf("first check asked %v", got)
	}

	const waiters = 31
	results := make(chan *egress.Error, waiters)
	for i := range waiters {
		go func() { results <- call([]string{"a", "b"}[i%2]) }()
	}
	eventually(t, "the calls to wait", func() bool { return waitingCalls(checks, "tok") == waiters })

	v.answers <- map[string][]string{"a": {"update"}}
	if err := <-first; err != nil {
		t.Fatalf("first call: %v", err)
	}
	second := <-v.asked
	slices.Sort(second)
	if !slices.Equal(second, []string{"a", "b"}) {
		t.Fatalf("second check asked %v, want each waiting path once", second)
	}
	v.answers <- nil // the token was revoked meanwhile
	for range waiters {
		fail := <-results
		if fail == nil {
			t.Fatalf("a waiting call passed on the first check's answer")
		}
		if fail.Status != http.StatusUnauthorized {
			t.Fatalf("waiting call: %d %s, want 401", fail.Status, fail.Msg)
		}
	}
	select {
	case extra := <-v.asked:
		t.Fatalf("%d calls took a third check (%v)", waiters+1, extra)
	default:
	}
	eventually(t, "the token's checks to be forgotten", func() bool {
		checks.mu.Lock()
		defer checks.mu.Unlock()
		return len(checks.byToken) == 0
	})
}

// TestChecksOfOtherTokensDoNotWait: a token's check never waits for
// another token's.
func TestChecksOfOtherTokensDoNotWait(t *testing.T) {
	v := &scriptedVault{asked: make(chan []string, 8), answers: make(chan map[string][]string, 8)}
	checks := newCapabilityChecks(func(ctx context.Context, token string, paths []string) (map[string][]string, checkFail) {
		if token == "slow" {
			return v.ask(ctx, token, paths)
		}
		return map[string][]string{paths[0]: {"update"}}, checkFail{}
	})
	go func() { _, _ = checks.capabilities(context.Background(), "slow", "a") }()
	<-v.asked
	caps, fail := checks.capabilities(context.Background(), "quick", "a")
	if fail.failed() || !slices.Equal(caps, []string{"update"}) {
		t.Fatalf("quick token: %v %+v", caps, fail)
	}
	v.answers <- map[string][]string{}
}

// TestAWaitingCallsEndDoesNotCancelTheCheck: a call that gives up leaves
// the shared check to decide the others.
func TestAWaitingCallsEndDoesNotCancelTheCheck(t *testing.T) {
	v := &scriptedVault{asked: make(chan []string, 8), answers: make(chan map[string][]string, 8)}
	checks := newCapabilityChecks(v.ask)
	go func() { _, _ = checks.capabilities(context.Background(), "tok", "a") }()
	<-v.asked

	gaveUp, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var stayed []string
	var stayedFail checkFail
	wg.Go(func() { _, _ = checks.capabilities(gaveUp, "tok", "a") })
	wg.Go(func() { stayed, stayedFail = checks.capabilities(context.Background(), "tok", "a") })
	eventually(t, "two waiting calls", func() bool { return waitingCalls(checks, "tok") == 2 })
	cancel()
	v.answers <- map[string][]string{"a": {"deny"}}
	<-v.asked
	v.answers <- map[string][]string{"a": {"update"}}
	wg.Wait()
	if stayedFail.failed() || !slices.Equal(stayed, []string{"update"}) {
		t.Fatalf("the call that stayed got %v %+v", stayed, stayedFail)
	}
}

// TestManyPathsSplitIntoChecksOfBoundedSize: past maxCheckPaths distinct
// paths, calls wait for the check after.
func TestManyPathsSplitIntoChecksOfBoundedSize(t *testing.T) {
	v := &scriptedVault{asked: make(chan []string, 8), answers: make(chan map[string][]string, 8)}
	checks := newCapabilityChecks(v.ask)
	go func() { _, _ = checks.capabilities(context.Background(), "tok", "first") }()
	<-v.asked
	n := maxCheckPaths + 3
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			p := fmt.Sprint("p", i)
			if caps, fail := checks.capabilities(context.Background(), "tok", p); fail.failed() || !slices.Equal(caps, []string{"update"}) {
				t.Errorf("%s: %v %+v", p, caps, fail)
			}
		})
	}
	eventually(t, "every call to wait", func() bool { return waitingCalls(checks, "tok") == n })
	all := func(paths []string) map[string][]string {
		m := map[string][]string{}
		for _, p := range paths {
			m[p] = []string{"update"}
		}
		return m
	}
	v.answers <- map[string][]string{}
	a := <-v.asked
	v.answers <- all(a)
	b := <-v.asked
	v.answers <- all(b)
	wg.Wait()
	if len(a) != maxCheckPaths || len(b) != 3 {
		t.Fatalf("checks of %d and %d paths, want %d and 3", len(a), len(b), maxCheckPaths)
	}
}

// TestACheckIsSentBeforeItsCallWaits: start sends the check at once and
// returns, so the edge reads its cached injection while Vault decides;
// the answer is the one Vault gives after the start.
func TestACheckIsSentBeforeItsCallWaits(t *testing.T) {
	v := &scriptedVault{asked: make(chan []string, 1), answers: make(chan map[string][]string, 1)}
	checks := newCapabilityChecks(v.ask)
	wait := checks.start("tok", "orgs/acme/proxy/gh/GET/user")
	select {
	case paths := <-v.asked:
		if !slices.Equal(paths, []string{"orgs/acme/proxy/gh/GET/user"}) {
			t.Fatalf("asked %v", paths)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the check was not sent before the call waited for it")
	}
	v.answers <- nil // Vault: the token is revoked
	caps, fail := wait(context.Background())
	if caps != nil || fail.status != http.StatusForbidden {
		t.Fatalf("a revoked token's call got %v %+v", caps, fail)
	}
}
