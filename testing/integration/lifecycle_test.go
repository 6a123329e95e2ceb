package integration

import (
	"context"
	"testing"

	"github.com/clankteam/credentials/internal/contract"
)

// TestLastUseSurvivesReload: a use made just before the plugin is reloaded
// (as on an upgrade) is stored by the backend's cleanup, not lost with the
// process's memory.
func TestLastUseSurvivesReload(t *testing.T) {
	ctx := context.Background()
	up := startFake(t)
	org := brokerOrg(t, "lastuse-reload", up)
	mount := contract.Mount(org)
	if _, err := viaVaultCall(vault.RootToken, org, "key-a", "GET", "/v1/balance"); err != nil {
		t.Fatal(err)
	}
	root := vault.Client()
	if _, err := root.Logical().WriteWithContext(ctx, "sys/plugins/reload/backend", map[string]interface{}{
		"mounts": []string{mount + "/"},
	}); err != nil {
		t.Fatalf("reloading the mount: %v", err)
	}
	c, err := root.Logical().ReadWithContext(ctx, mount+"/creds/key-a")
	if err != nil || c == nil {
		t.Fatalf("reading key-a after the reload: %v", err)
	}
	if c.Data["last_used_at"] == nil || c.Data["last_used_at"] == "" {
		t.Errorf("the use before the reload was lost: %v", c.Data)
	}
}
