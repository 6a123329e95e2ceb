package faults

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/clankteam/credentials/testing/harness"
)

// TestClusterFailsOver: the harness's cluster elects a new leader when
// the active node is killed, takes writes through a standby, and takes the
// killed node back from its data. It runs with the fault suite.
func TestClusterFailsOver(t *testing.T) {
	if os.Getenv("CREDENTIALS_FAULTS") != "1" {
		t.Skip("runs with make test-faults (CREDENTIALS_FAULTS=1)")
	}
	start := time.Now()
	c := harness.StartClusterT(t, harness.ClusterOptions{})
	t.Logf("cluster up in %s", time.Since(start))
	ctx := context.Background()
	active, err := c.WaitActive(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := harness.CreateTestOrg(ctx, active.Client(c.RootToken), "acme"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if n == active {
			continue
		}
		if _, err := n.Client(c.RootToken).Logical().Write("orgs/acme/creds/k-"+n.Name, map[string]any{"type": "api_key", "service": "stripe", "api_key": "sk_test_123456"}); err != nil {
			t.Fatalf("write via standby %s: %v", n.Name, err)
		}
	}
	t0 := time.Now()
	active.Kill()
	next, err := c.WaitActive(ctx, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("new active %s after %s", next.Name, time.Since(t0))
	if err := c.Restart(ctx, active); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitAllUnsealed(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("plugins on %s: %v", next.Name, next.PluginPids())
}
