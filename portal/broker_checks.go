package portal

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"sync"

	"github.com/clankteam/credentials/internal/egress"
)

// Vault's per-call decision, shared by the calls of one token that arrive
// together. A call that finds no check of its token in flight starts one.
// A call that finds one in flight does not join it (it may have been sent
// before a revocation that came before the call); it waits for the next
// check, which starts when the one in flight ends and carries the paths
// of every call that waited. So every call is decided by a
// sys/capabilities-self request sent after the call arrived: a token
// revoked or a policy narrowed before the call is refused on it. An agent
// making one call at a time pays one check per call, as before; an agent
// making 32 at once pays about one per Vault round trip.

// maxCheckPaths bounds the paths of one check; calls past it wait for
// the check after.
const maxCheckPaths = 64

// capabilityChecks are the checks in flight and waiting, by token.
type capabilityChecks struct {
	// ask sends one check: the token's capabilities on each path.
	ask func(ctx context.Context, token string, paths []string) (map[string][]string, checkFail)

	mu      sync.Mutex
	byToken map[string]*tokenChecks
}

// tokenChecks are one token's checks: the one in flight, if any, and the
// ones waiting for it, oldest first.
type tokenChecks struct {
	inFlight bool
	waiting  []*capabilityCheck
}

// capabilityCheck is one sys/capabilities-self request and the calls it
// decides.
type capabilityCheck struct {
	paths []string
	// calls counts the calls the check decides.
	calls int
	// done is closed when caps or fail is set.
	done chan struct{}
	caps map[string][]string
	fail checkFail
}

// checkFail is why a check gave no capabilities: Vault's refusal of the
// token (status and messages, mapped per call), or no answer at all.
type checkFail struct {
	status int
	errs   []string
	err    *egress.Error
}

func (f checkFail) failed() bool { return f.status != 0 || f.err != nil }

func newCapabilityChecks(ask func(ctx context.Context, token string, paths []string) (map[string][]string, checkFail)) *capabilityChecks {
	return &capabilityChecks{ask: ask, byToken: map[string]*tokenChecks{}}
}

// capabilities returns the token's capabilities on path, from a check
// sent after this call.
func (c *capabilityChecks) capabilities(ctx context.Context, token, path string) ([]string, checkFail) {
	return c.start(token, path)(ctx)
}

// start sends (or joins the next) check of the token's capabilities on
// path and returns the wait for its answer, so that the caller can do
// its own work, none of it seen outside the process, while Vault decides.
func (c *capabilityChecks) start(token, path string) (wait func(ctx context.Context) ([]string, checkFail)) {
	c.mu.Lock()
	tc := c.byToken[token]
	if tc == nil {
		tc = &tokenChecks{}
		c.byToken[token] = tc
	}
	var check *capabilityCheck
	if !tc.inFlight {
		tc.inFlight = true
		check = &capabilityCheck{paths: []string{path}, done: make(chan struct{})}
		go c.run(token, tc, check)
	} else {
		if n := len(tc.waiting); n > 0 && (slices.Contains(tc.waiting[n-1].paths, path) || len(tc.waiting[n-1].paths) < maxCheckPaths) {
			check = tc.waiting[n-1]
		} else {
			check = &capabilityCheck{done: make(chan struct{})}
			tc.waiting = append(tc.waiting, check)
		}
		if !slices.Contains(check.paths, path) {
			check.paths = append(check.paths, path)
		}
	}
	check.calls++
	c.mu.Unlock()

	return func(ctx context.Context) ([]string, checkFail) {
		select {
		case <-check.done:
			return check.caps[path], check.fail
		case <-ctx.Done():
			return nil, checkFail{err: &egress.Error{Status: http.StatusServiceUnavailable, Msg: "Vault did not answer in time; try again shortly"}}
		}
	}
}

// run sends check, then each check that waited for it, one at a time,
// until none waits.
func (c *capabilityChecks) run(token string, tc *tokenChecks, check *capabilityCheck) {
	for check != nil {
		// The check decides many calls: no one call's end cancels it.
		ctx, cancel := context.WithTimeout(context.Background(), edgeVaultTimeout)
		check.caps, check.fail = c.ask(ctx, token, check.paths)
		cancel()
		close(check.done)

		c.mu.Lock()
		check = nil
		if len(tc.waiting) > 0 {
			check = tc.waiting[0]
			tc.waiting = tc.waiting[1:]
		} else {
			tc.inFlight = false
			delete(c.byToken, token)
		}
		c.mu.Unlock()
	}
}

// askVault sends one sys/capabilities-self request with the token.
func (h *brokerHandler) askVault(ctx context.Context, token string, paths []string) (map[string][]string, checkFail) {
	var out struct {
		Data map[string]any `json:"data"`
	}
	var refused checkFail
	fail := h.vaultDo(ctx, token, http.MethodPost, &url.URL{Path: "/v1/sys/capabilities-self"}, map[string]any{"paths": paths}, &out,
		func(status int, errs []string) *egress.Error {
			refused = checkFail{status: status, errs: errs}
			return &egress.Error{Status: status}
		})
	if refused.failed() {
		return nil, refused
	}
	if fail != nil {
		return nil, checkFail{err: fail}
	}
	caps := make(map[string][]string, len(paths))
	for _, p := range paths {
		list, _ := out.Data[p].([]any)
		for _, c := range list {
			if s, ok := c.(string); ok {
				caps[p] = append(caps[p], s)
			}
		}
	}
	return caps, checkFail{}
}
