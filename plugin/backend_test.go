package credentials

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
)

// testClock is a settable clock for the backend.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// getTestBackend returns a backend over in-memory storage with a fake clock
// set to 2026-06-01 12:00 UTC.
func getTestBackend(tb testing.TB) (*backend, logical.Storage, *testClock) {
	tb.Helper()
	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	conf.System = logical.TestSystemView()
	// The tests' upstream fakes and OAuth server listen on loopback: the
	// operator's setting allows them here as the harness's does for Vault.
	guard, err := egress.ParseGuard("127.0.0.0/8")
	if err != nil {
		tb.Fatal(err)
	}
	b := newBackend(conf, &egressRuntime{guard: guard})
	if err := b.Setup(context.Background(), conf); err != nil {
		tb.Fatal(err)
	}
	clock := &testClock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	b.now = clock.now
	return b, conf.StorageView, clock
}

// do sends one request to the backend and fails the test on a transport
// error (a Go error from the handler), returning the response.
func do(tb testing.TB, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]interface{}) *logical.Response {
	tb.Helper()
	resp, err := doErr(b, s, op, path, data)
	if err != nil {
		tb.Fatalf("%s %s: %v", op, path, err)
	}
	return resp
}

func doErr(b *backend, s logical.Storage, op logical.Operation, path string, data map[string]interface{}) (*logical.Response, error) {
	req := &logical.Request{
		Operation: op,
		Path:      path,
		Data:      data,
		Storage:   s,
	}
	if op == logical.CreateOperation || op == logical.UpdateOperation {
		// Vault decides create vs update with the existence check; do the
		// same so that create-only checks run as they do in Vault.
		checkFound, exists, err := b.HandleExistenceCheck(context.Background(), req)
		if err != nil {
			return nil, err
		}
		if checkFound {
			req.Operation = logical.UpdateOperation
			if !exists {
				req.Operation = logical.CreateOperation
			}
		}
	}
	return b.HandleRequest(context.Background(), req)
}

// mustOK fails the test when resp is an error response.
func mustOK(tb testing.TB, resp *logical.Response) *logical.Response {
	tb.Helper()
	if resp != nil && resp.IsError() {
		tb.Fatalf("unexpected error response: %v", resp.Error())
	}
	return resp
}

// TestSecretsAreSealWrappedAndProviderWritesForwarded: every storage
// prefix holding secrets is seal-wrapped where Vault supports it, and every
// write that may call a provider is forwarded from a performance standby,
// which could not store the provider's answer (a spent single-use refresh
// token would be lost).
func TestSecretsAreSealWrappedAndProviderWritesForwarded(t *testing.T) {
	b, _, _ := getTestBackend(t)
	wrapped := strings.Join(b.PathsSpecial.SealWrapStorage, " ")
	for _, prefix := range []string{"config", credStoragePrefix, appStoragePrefix, pendingConnectPrefix, webhookConfigPrefix} {
		if !strings.Contains(wrapped, prefix) {
			t.Errorf("%s is not seal-wrapped (%s)", prefix, wrapped)
		}
	}
	forwarded := map[string]bool{}
	for _, p := range b.Paths {
		for op, h := range p.Operations {
			if po, ok := h.(*framework.PathOperation); ok && po.ForwardPerformanceStandby {
				forwarded[p.Pattern+" "+string(op)] = true
			}
		}
	}
	for _, want := range []string{"connect", "callback", "disconnect", "refresh", "verify", "proxy/"} {
		found := false
		for k := range forwarded {
			if strings.Contains(k, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no forwarded write for %s", want)
		}
	}
	// A node that cannot store an answer asks no provider: Vault forwards
	// what fails with ErrReadOnly.
	sys, ok := b.System().(*logical.StaticSystemView)
	if !ok {
		t.Fatalf("system view %T", b.System())
	}
	sys.ReplicationStateVal = consts.ReplicationPerformanceStandby
	if r := b.refreshShared(context.Background(), &logical.InmemStorage{}, "x", refreshOnUse); !errors.Is(r.err, logical.ErrReadOnly) {
		t.Errorf("a refresh on a performance standby: %v", r.err)
	}
}
