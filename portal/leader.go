package portal

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// During a leader change Vault answers requests it never ran: a standby
// that knows no active node answers 500 "local node not active but active
// cluster node not found", a sealing or standby node 503, and a stopped
// node refuses the connection. Such a request is safe to send once more,
// whatever its method, after the moment an election takes; anything else
// (a reset connection, a timeout) may have run and is not retried.

// leaderRetryWait is the pause before the one retry.
const leaderRetryWait = 750 * time.Millisecond

// leaderChangeMessages are Vault's answers for a request no active node
// ran.
var leaderChangeMessages = []string{
	"local node not active",
	"active cluster node not found",
	"Vault is sealed",
	"node is not the leader",
	"leadership lost",
}

// neverRan says an answer (status and Vault's messages) or a transport
// error proves the request did not run on an active node.
func neverRan(status int, errs []string, err error) bool {
	if err != nil {
		var op *net.OpError
		return errors.As(err, &op) && op.Op == "dial"
	}
	if status != http.StatusInternalServerError && status != http.StatusServiceUnavailable {
		return false
	}
	for _, e := range errs {
		for _, m := range leaderChangeMessages {
			if strings.Contains(e, m) {
				return true
			}
		}
	}
	return false
}

// leaderChangeText is what a person or agent is told when the retry
// failed too.
const leaderChangeText = "Vault is changing its active node; try again shortly"

// retryNeverRan is the vault/api client's retry policy: once, for an
// answer that proves the request never ran (see neverRan).
func retryNeverRan(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		return neverRan(0, nil, err), nil
	}
	if resp.StatusCode != http.StatusInternalServerError && resp.StatusCode != http.StatusServiceUnavailable {
		return false, nil
	}
	// Peek at Vault's message and put the body back for the caller.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return neverRan(resp.StatusCode, []string{string(body)}, nil), nil
}

// sleepCtx waits d unless ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
