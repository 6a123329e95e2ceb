package integration

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clankteam/credentials/portal/provision"
)

// The edge's authorization: Vault decides every call with the agent's own
// token before anything is read or sent, and a token Vault no longer
// allows is refused on its next call, however many calls it has in flight.

// countingReader counts what the portal pulled of a request body.
type countingReader struct {
	left int64
	read atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), c.left))
	clear(p[:n])
	c.left -= int64(n)
	c.read.Add(int64(n))
	return n, nil
}

// TestEdgeAuthorizesBeforeReadingTheBody: a made-up token with a 24 MiB
// body is refused without the body being read (a client's socket buffers
// hold a few MiB at most).
func TestEdgeAuthorizesBeforeReadingTheBody(t *testing.T) {
	f := newEdgeFixture(t, "edge-preauth", nil)
	body := &countingReader{left: 24 << 20}
	req, _ := http.NewRequest(http.MethodPost, f.brokerURL("/upload"), body)
	req.ContentLength = 24 << 20
	req.Header.Set("Authorization", "Bearer hvs.made-up-token-00000000000000")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("status %d", resp.StatusCode)
		}
	}
	if n := body.read.Load(); n > 8<<20 {
		t.Errorf("%d bytes of the body were taken before the token was checked", n)
	}
	if got := len(f.up.Requests()); got != 0 {
		t.Errorf("%d request(s) reached the service", got)
	}
}

// TestEdgeRefusesAtOnceWhatVaultNoLongerAllows: the edge keeps a token's
// injection for a few seconds, but Vault decides every call: a revoked
// token and a deleted agent are refused on their very next call, and the
// calls are in Vault's audit log.
func TestEdgeRefusesAtOnceWhatVaultNoLongerAllows(t *testing.T) {
	up := startFake(t)
	org := brokerOrg(t, "edge-revoke", up)
	base := startPortal(t)
	ctx := context.Background()
	call := func(token string) int {
		t.Helper()
		status, _, _ := viaPortal(t, base, token, http.MethodGet, "/broker/"+org+"/key-a/v1/balance", nil)
		return status
	}

	revoked := newAgent(t, org, provision.AgentSpec{Name: "revoked", Creds: []string{"key-a"}})
	if got := call(revoked); got != http.StatusOK {
		t.Fatalf("before revoking: %d", got)
	}
	if err := vault.Client().Auth().Token().RevokeTreeWithContext(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	if got := call(revoked); got != http.StatusUnauthorized {
		t.Errorf("revoked token: %d, want 401", got)
	}

	mgr := managerClient(t, org)
	deleted := newAgent(t, org, provision.AgentSpec{Name: "deleted", Creds: []string{"key-a"}})
	if got := call(deleted); got != http.StatusOK {
		t.Fatalf("before deleting the agent: %d", got)
	}
	if err := provision.DeleteAgent(ctx, mgr, org, "deleted"); err != nil {
		t.Fatal(err)
	}
	if got := call(deleted); got != http.StatusUnauthorized && got != http.StatusForbidden {
		t.Errorf("deleted agent: %d, want 401 or 403", got)
	}
}

// TestEdgeRefusesRevokedTokensAmidConcurrentCalls: the edge has Vault
// decide the calls of a token that arrive together in shared checks, yet
// each call is decided by a check sent after it arrived. With 16 calls
// of each token always in flight, every call that starts after the token
// is revoked, or its policy narrowed, is refused.
func TestEdgeRefusesRevokedTokensAmidConcurrentCalls(t *testing.T) {
	up := startFake(t)
	org := brokerOrg(t, "edge-concurrent", up)
	base := startPortal(t)
	ctx := context.Background()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(client.CloseIdleConnections)

	type outcome struct {
		start  time.Time
		status int
	}
	// hammer makes calls with token from 16 goroutines until stop.
	hammer := func(token string, stop <-chan struct{}) <-chan []outcome {
		done := make(chan []outcome, 16)
		for range 16 {
			go func() {
				var seen []outcome
				for {
					select {
					case <-stop:
						done <- seen
						return
					default:
					}
					req, _ := http.NewRequest(http.MethodGet, base+"/broker/"+org+"/key-a/v1/balance", nil)
					req.Header.Set("Authorization", "Bearer "+token)
					o := outcome{start: time.Now()}
					resp, err := client.Do(req)
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						o.status = resp.StatusCode
					}
					seen = append(seen, o)
				}
			}()
		}
		return done
	}

	for _, c := range []struct {
		name   string
		change func(token string)
		want   int
	}{
		{"revoked", func(token string) {
			if err := vault.Client().Auth().Token().RevokeTreeWithContext(ctx, token); err != nil {
				t.Error(err)
			}
		}, http.StatusUnauthorized},
		{"narrowed", func(string) {
			// The agent's policy keeps only what every agent may do, without
			// the credential.
			if err := vault.Client().Sys().PutPolicyWithContext(ctx, provision.AgentName(org, "narrowed"),
				`path "sys/capabilities-self" { capabilities = ["update"] }`); err != nil {
				t.Error(err)
			}
		}, http.StatusForbidden},
	} {
		t.Run(c.name, func(t *testing.T) {
			token := newAgent(t, org, provision.AgentSpec{Name: c.name, Creds: []string{"key-a"}})
			stop := make(chan struct{})
			done := hammer(token, stop)
			time.Sleep(300 * time.Millisecond)
			changing := time.Now()
			c.change(token)
			changed := time.Now()
			time.Sleep(300 * time.Millisecond)
			close(stop)

			var before, after, allowedBefore int
			for range 16 {
				for _, o := range <-done {
					switch {
					case o.start.Before(changing):
						before++
						if o.status == http.StatusOK {
							allowedBefore++
						}
					case o.start.After(changed):
						after++
						if o.status != c.want {
							t.Errorf("a call started %v after the change answered %d, want %d", o.start.Sub(changed), o.status, c.want)
						}
					}
				}
			}
			if allowedBefore == 0 || after == 0 {
				t.Fatalf("%d calls allowed of %d before the change, %d after it: the test saw no concurrent calls", allowedBefore, before, after)
			}
			t.Logf("%d calls before the change (%d allowed), %d after it", before, allowedBefore, after)
		})
	}
}
