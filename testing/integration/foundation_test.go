package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/portal/provision"
)

// newOrg provisions a fresh org for one test and returns its name.
func newOrg(t *testing.T, name string) string {
	t.Helper()
	if err := vault.CreateOrg(context.Background(), name); err != nil {
		t.Fatalf("creating org %s: %v", name, err)
	}
	return name
}

// tokenFor returns a token holding only org's policy of the given role.
func tokenFor(t *testing.T, org string, role provision.Role) string {
	t.Helper()
	policy := provision.AdminPolicy(org)
	if role == provision.RoleMember {
		policy = provision.MemberPolicy(org)
	}
	tok, err := vault.Token(context.Background(), time.Hour, policy)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestEngineIsMountedPerOrg(t *testing.T) {
	org := newOrg(t, "mounted")
	ctx := context.Background()
	mounts, err := vault.Client().Sys().ListMountsWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := mounts["orgs/"+org+"/"]
	if !ok {
		t.Fatalf("orgs/%s/ not mounted", org)
	}
	if m.Type != provision.PluginName {
		t.Fatalf("mount type = %q, want %q", m.Type, provision.PluginName)
	}
	if m.RunningVersion == "" {
		t.Errorf("mount reports no running version")
	}

	// Provisioning is idempotent.
	if err := vault.CreateOrg(ctx, org); err != nil {
		t.Fatalf("second CreateOrg: %v", err)
	}
}

func TestConfigThroughVault(t *testing.T) {
	org := newOrg(t, "configured")
	c := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	ctx := context.Background()

	s, err := c.Logical().ReadWithContext(ctx, "orgs/"+org+"/config")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(s.Data["refresh_ahead"]); got != "600" {
		t.Errorf("default refresh_ahead = %v, want 600", got)
	}

	_, err = c.Logical().WriteWithContext(ctx, "orgs/"+org+"/config", map[string]interface{}{
		"redirect_url":  "https://portal.example/oauth/callback",
		"refresh_ahead": "5m",
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err = c.Logical().ReadWithContext(ctx, "orgs/"+org+"/config")
	if err != nil {
		t.Fatal(err)
	}
	if s.Data["redirect_url"] != "https://portal.example/oauth/callback" || fmt.Sprint(s.Data["refresh_ahead"]) != "300" {
		t.Errorf("config after write = %v", s.Data)
	}

	_, err = c.Logical().WriteWithContext(ctx, "orgs/"+org+"/config", map[string]interface{}{
		"redirect_url": "not a url",
	})
	assertStatus(t, err, http.StatusBadRequest, "redirect_url")
}

func TestOrgsDoNotSeeEachOther(t *testing.T) {
	a, b := newOrg(t, "iso-a"), newOrg(t, "iso-b")
	ctx := context.Background()
	adminA := vault.ClientWithToken(tokenFor(t, a, provision.RoleAdmin))
	adminB := vault.ClientWithToken(tokenFor(t, b, provision.RoleAdmin))

	if _, err := adminA.Logical().WriteWithContext(ctx, "orgs/"+a+"/config", map[string]interface{}{
		"redirect_url": "https://a.example/cb",
	}); err != nil {
		t.Fatal(err)
	}
	// Each mount has its own storage: B's config is untouched by A's write.
	s, err := adminB.Logical().ReadWithContext(ctx, "orgs/"+b+"/config")
	if err != nil {
		t.Fatal(err)
	}
	if s.Data["redirect_url"] != "" {
		t.Errorf("org B sees redirect_url %v written in org A", s.Data["redirect_url"])
	}
	// And B's token is denied on A's mount.
	_, err = adminB.Logical().ReadWithContext(ctx, "orgs/"+a+"/config")
	assertStatus(t, err, http.StatusForbidden, "permission denied")
}

func TestBadOrgNameRefused(t *testing.T) {
	for _, name := range []string{"", "Acme", "a/b", "-x", strings.Repeat("a", 64), "acme corp"} {
		err := vault.CreateOrg(context.Background(), name)
		if !errors.Is(err, provision.ErrBadOrgName) {
			t.Errorf("CreateOrg(%q) = %v, want ErrBadOrgName", name, err)
		}
	}
}

func assertStatus(t *testing.T, err error, status int, contains string) {
	t.Helper()
	var re *api.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("error = %v, want HTTP %d", err, status)
	}
	if re.StatusCode != status {
		t.Fatalf("status = %d, want %d (%v)", re.StatusCode, status, re.Errors)
	}
	if contains != "" && !strings.Contains(strings.Join(re.Errors, " "), contains) {
		t.Fatalf("errors %v do not mention %q", re.Errors, contains)
	}
}
