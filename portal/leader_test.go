package portal

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/clankteam/credentials/internal/egress"
)

// standby answers as a Vault standby that knows no active node, for the
// first refusals requests, then as the active node.
func standby(t *testing.T, refusals int32, refusal string) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if n.Add(1) <= refusals {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"errors":["`+refusal+`"]}`)
			return
		}
		_, _ = io.WriteString(w, `{"data":{"ok":true}}`)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

const noActiveNode = "local node not active but active cluster node not found"

// TestEdgeRetriesALeaderChangeOnce: a request a standby refused because
// it knows no active node never ran, so the edge sends it once more; if
// that is refused too, the agent gets 503 with Retry-After, not Vault's
// text; any other failure is not retried.
func TestEdgeRetriesALeaderChangeOnce(t *testing.T) {
	for _, c := range []struct {
		name     string
		refusals int32
		refusal  string
		status   int
		requests int32
	}{
		{"one refusal, then the new leader", 1, noActiveNode, 0, 2},
		{"no leader yet", 5, noActiveNode, http.StatusServiceUnavailable, 2},
		{"another internal error", 5, "internal error", http.StatusBadGateway, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, n := standby(t, c.refusals, c.refusal)
			h := newBrokerHandler(srv.URL, nil, func() string { return "" }, slog.New(slog.DiscardHandler))
			var out map[string]any
			fail := h.vaultDo(context.Background(), "tok", http.MethodPost, &url.URL{Path: "/v1/sys/capabilities-self"}, map[string]any{}, &out,
				func(status int, errs []string) *egress.Error { return vaultRefusal(status, errs, &edgeCall{}, "GET") })
			got := 0
			if fail != nil {
				got = fail.Status
			}
			if got != c.status || n.Load() != c.requests {
				t.Fatalf("answer %d after %d requests, want %d after %d (%v)", got, n.Load(), c.status, c.requests, fail)
			}
			if c.status == http.StatusServiceUnavailable {
				w := httptest.NewRecorder()
				brokerFail(w, fail)
				if w.Header().Get("Retry-After") == "" || fail.Msg != leaderChangeText {
					t.Errorf("503 without Retry-After or with %q", fail.Msg)
				}
			}
		})
	}
}

// TestPagesRetryALeaderChangeOnce: the pages' Vault client retries, once,
// a request no active node ran, and tells the person plainly otherwise.
func TestPagesRetryALeaderChangeOnce(t *testing.T) {
	srv, n := standby(t, 1, noActiveNode)
	base, err := newVaultBase(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{vaultBase: base}
	v, err := s.vaultFor("tok")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.write(context.Background(), "orgs/acme/creds/x", map[string]any{"type": "api_key"}); err != nil || n.Load() != 2 {
		t.Fatalf("after one standby refusal: %v, %d requests", err, n.Load())
	}

	srv2, _ := standby(t, 5, noActiveNode)
	base2, _ := newVaultBase(srv2.URL)
	v2, _ := (&Server{vaultBase: base2}).vaultFor("tok")
	_, err = v2.read(context.Background(), "orgs/acme/creds/x")
	if status, msg := vaultError(err); status != http.StatusServiceUnavailable || msg != leaderChangeText+"." {
		t.Errorf("while no node is active: %d %q", status, msg)
	}

	// A closed port: nothing was sent.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String()
	ln.Close()
	base3, _ := newVaultBase(closed)
	v3, _ := (&Server{vaultBase: base3}).vaultFor("tok")
	_, err = v3.read(context.Background(), "orgs/acme/creds/x")
	if status, _ := vaultError(err); status != http.StatusServiceUnavailable {
		t.Errorf("a Vault that refuses connections: %d", status)
	}
}
