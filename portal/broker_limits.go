package portal

import (
	"context"
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/internal/usage"
)

// Limits at the edge. When limits hold for a token's calls of a
// credential (the sealed injection says so), the edge makes them from a
// lease of calls the engine counted already (limits/lease, with the
// agent's token), asking for another when it is spent. A lease lasts
// leaseLife; what is left of it then is dropped, not returned, so the
// portals together never pass a limit. An agent calling fast gets larger
// leases (doubling up to maxLease, the engine giving fewer near a
// limit), so its calls cost no round trip; one calling slowly asks for
// one at a time. A refusal is answered 429 with the engine's Retry-After,
// before the service sees anything.

const (
	leaseLife = time.Second
	maxLease  = 32
	// maxLeases bounds the leases kept; past it they start over.
	maxLeases = 10000
)

type callLeases struct {
	h *brokerHandler

	mu      sync.Mutex
	byToken map[string]*callLease
}

type callLease struct {
	left    int64
	expires time.Time
	// want is the size of the next lease asked for.
	want int64
	// asking is closed when the lease asked for arrives; nil when none is
	// being asked for. Calls that find the lease spent while one is asked
	// for wait for it rather than ask too.
	asking chan struct{}
	fail   *egress.Error
}

// take lets one call of call's token through, from the lease or a new one.
func (l *callLeases) take(ctx context.Context, call *edgeCall) *egress.Error {
	key := tokenKey(call.token, call.org, call.cred)
	for {
		now := time.Now()
		l.mu.Lock()
		lease := l.byToken[key]
		if lease == nil {
			if len(l.byToken) >= maxLeases {
				l.byToken = map[string]*callLease{}
			}
			lease = &callLease{want: 1}
			l.byToken[key] = lease
		}
		if lease.left > 0 && now.Before(lease.expires) {
			lease.left--
			l.mu.Unlock()
			return nil
		}
		if wait := lease.asking; wait != nil {
			l.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return &egress.Error{Status: http.StatusServiceUnavailable, Msg: "the call ended while its limits were asked"}
			}
			l.mu.Lock()
			fail := lease.fail
			l.mu.Unlock()
			if fail != nil {
				return fail
			}
			continue
		}
		// Spent within its life: ask for more; left to expire: fewer.
		if !lease.expires.IsZero() {
			if lease.left == 0 && now.Before(lease.expires) {
				lease.want = min(lease.want*2, maxLease)
			} else {
				lease.want = max(lease.want/2, 1)
			}
		}
		want := lease.want
		done := make(chan struct{})
		lease.asking, lease.fail = done, nil
		l.mu.Unlock()

		granted, fail := l.ask(ctx, call, want)
		l.mu.Lock()
		lease.asking, lease.fail = nil, fail
		if fail == nil {
			// This call takes one of the lease.
			lease.left, lease.expires = max(granted-1, 0), time.Now().Add(leaseLife)
		}
		close(done)
		l.mu.Unlock()
		return fail
	}
}

// ask leases want calls from the engine.
func (l *callLeases) ask(ctx context.Context, call *edgeCall, want int64) (int64, *egress.Error) {
	var out struct {
		Data struct {
			Granted int64 `json:"granted"`
		} `json:"data"`
	}
	u := &url.URL{Path: "/v1/" + contract.Mount(call.org) + "/limits/lease"}
	if fail := l.h.vaultDo(ctx, call.token, http.MethodPost, u, map[string]any{"credential": call.cred, "want": want}, &out,
		func(status int, errs []string) *egress.Error {
			e := engineRefusal(status, errs)
			if status == http.StatusTooManyRequests {
				e.Permanent, e.RetryAfter = false, retryAfterOf(e.Msg)
			}
			return e
		}); fail != nil {
		return 0, fail
	}
	return out.Data.Granted, nil
}

// retryAfterOf reads "retry after Ns" from the engine's refusal.
func retryAfterOf(msg string) int {
	const marker = "retry after "
	for i := 0; i+len(marker) < len(msg); i++ {
		if msg[i:i+len(marker)] == marker {
			n := 0
			for _, c := range msg[i+len(marker):] {
				if c < '0' || c > '9' {
					break
				}
				n = n*10 + int(c-'0')
			}
			if n > 0 {
				return n
			}
		}
	}
	return 1
}

// reportSpend tells the engine the usage an answer reported, signed with
// the agent's report key; a failure is logged: the answer is the agent's
// either way.
func (h *brokerHandler) reportSpend(call *edgeCall, key []byte, u usage.Usage) {
	mac := contract.ReportMAC(key, contract.ReportSpend, call.cred, u.Model, strconv.FormatInt(u.InputTokens, 10), strconv.FormatInt(u.OutputTokens, 10))
	ctx, cancel := context.WithTimeout(context.Background(), edgeVaultTimeout)
	defer cancel()
	u2 := &url.URL{Path: "/v1/" + contract.Mount(call.org) + "/limits/spend"}
	var out struct{}
	if fail := h.vaultDo(ctx, call.token, http.MethodPost, u2, map[string]any{
		"credential": call.cred, "model": u.Model, "input_tokens": u.InputTokens, "output_tokens": u.OutputTokens,
		"mac": hex.EncodeToString(mac),
	}, &out, engineRefusal); fail != nil {
		h.logger.Warn("broker: reporting an answer's usage for spend limits failed", "org", call.org, "cred", call.cred, "status", fail.Status, "error", fail.Msg)
	}
}
