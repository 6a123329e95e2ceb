package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
)

// Tenant safety, each attack an org admin (or anyone) tried, with a real
// org-admin token against the real Vault.

// TestAdminCannotReachPrivateAddresses: private targets are the operator's
// setting; no service field widens them, and a cloud metadata address is
// never dialled (before, allow_private_targets on a custom service read
// the Vault host's loopback and metadata endpoint).
func TestAdminCannotReachPrivateAddresses(t *testing.T) {
	ctx := context.Background()
	org := newOrg(t, "tenant-private")
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	mount := contract.Mount(org)
	_, err := admin.Logical().WriteWithContext(ctx, mount+"/services/inside", map[string]interface{}{
		"types": "api_key", "base_urls": "http://169.254.169.254", "allow_private_targets": true,
	})
	assertStatus(t, err, http.StatusBadRequest, "operator's setting")

	write(t, admin, mount+"/services/metadata", map[string]interface{}{"types": "api_key", "base_urls": "http://169.254.169.254"})
	write(t, admin, mount+"/creds/meta", map[string]interface{}{"type": "api_key", "service": "metadata", "api_key": "sk_live_0123456789abcd"})
	_, err = admin.Logical().WriteWithContext(ctx, mount+"/proxy/meta", map[string]interface{}{
		"method": "PUT", "path": "/latest/api/token", "headers": map[string]interface{}{"Metadata-Flavor": "Google"},
	})
	assertStatus(t, err, http.StatusBadGateway, "loopback, private or link-local")
}

// TestAdminCannotRepointAServiceInUse: the fields that decide where a
// service's secrets go cannot change while credentials use it (before, the
// stored key went to the admin's own host on the next call).
func TestAdminCannotRepointAServiceInUse(t *testing.T) {
	up := startFake(t)
	attacker := startFake(t)
	attacker.SetForbidden(brokerKeyA)
	org := brokerOrg(t, "tenant-repoint", up)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	_, err := admin.Logical().WriteWithContext(context.Background(), contract.Mount(org)+"/services/local", map[string]interface{}{
		"types": "api_key", "base_urls": attacker.URL,
	})
	assertStatus(t, err, http.StatusBadRequest, "cannot change")
	v := write(t, admin, contract.Mount(org)+"/creds/key-a/verify", nil)
	if v.Data["verified"] != true || len(attacker.Requests()) != 0 || attacker.Violations() != 0 {
		t.Errorf("after the refused change: verified %v, the attacker's host saw %d request(s)", v.Data["verified"], len(attacker.Requests()))
	}
}

// TestMetricsCannotBeGrownByCallers: made-up methods from anyone, without
// a token, share one label on the portal's /metrics (before, 200 of them
// grew it to 13 MB).
func TestMetricsCannotBeGrownByCallers(t *testing.T) {
	base := startPortal(t)
	for i := 0; i < 200; i++ {
		req, _ := http.NewRequest(fmt.Sprintf("M%0100d", i), base+"/healthz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "M0000") || len(body) > 64<<10 {
		t.Errorf("/metrics is %d bytes; made-up methods are labelled: %v", len(body), strings.Contains(string(body), "M0000"))
	}
}
