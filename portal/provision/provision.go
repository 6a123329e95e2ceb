// Package provision sets up an organization in Vault: the engine's mount, the
// org's policies and the auth methods its people and agents log in with. It
// is an operator's job, run with an operator token (`portal org create`).
package provision

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
)

// PluginName is the name the engine is registered under in Vault's catalog.
const PluginName = "credentials"

// ErrBadOrgName is returned for an org name that cannot be a mount path.
var ErrBadOrgName = errors.New(contract.OrgNameRule)

// ValidateOrgName says whether name can name an org (contract.ValidOrgName).
func ValidateOrgName(name string) error {
	if !contract.ValidOrgName(name) {
		return fmt.Errorf("%w: %q", ErrBadOrgName, name)
	}
	return nil
}

// AdminPolicy and MemberPolicy name an org's two people policies.
func AdminPolicy(org string) string  { return "orgs-" + org + "-admin" }
func MemberPolicy(org string) string { return "orgs-" + org + "-member" }

// adminPolicyHCL grants everything under the org's mount. Agent management
// (AppRoles and their policies) is an operator action and is not included:
// whoever can write policies can grant themselves anything.
func adminPolicyHCL(org string) string {
	m := contract.Mount(org)
	return fmt.Sprintf(`# Administrators of org %[1]s: everything under its mount.
path "%[2]s/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}
`, org, m)
}

// memberPolicyHCL lets members see metadata and connect OAuth credentials,
// but not create, change or delete them.
func memberPolicyHCL(org string) string {
	m := contract.Mount(org)
	return fmt.Sprintf(`# Members of org %[1]s: read metadata, connect OAuth credentials, no delete.
path "%[2]s/config" {
  capabilities = ["read"]
}
path "%[2]s/creds/" {
  capabilities = ["list"]
}
path "%[2]s/creds/+" {
  capabilities = ["read"]
}
# Connecting a credential that works replaces (and revokes) its grant,
# perhaps with another account: an admin's decision.
path "%[2]s/creds/+/connect" {
  capabilities = ["update"]
  denied_parameters = {
    "replace" = []
  }
}
path "%[2]s/creds/+/callback" {
  capabilities = ["update"]
}
path "%[2]s/creds/+/verify" {
  capabilities = ["update"]
}
path "%[2]s/services/*" {
  capabilities = ["read", "list"]
}
path "%[2]s/services/" {
  capabilities = ["list"]
}
path "%[2]s/apps/*" {
  capabilities = ["read", "list"]
}
path "%[2]s/apps/" {
  capabilities = ["list"]
}
`, org, m)
}

// CreateOrg provisions org: the engine mounted at orgs/<org>, the admin,
// member and agent-managers policies, and the approle and userpass auth
// methods. Running it again changes nothing that is already right, so it is
// safe to repeat.
func CreateOrg(ctx context.Context, c *api.Client, org string) error {
	if err := ValidateOrgName(org); err != nil {
		return err
	}
	if err := ensureMount(ctx, c, org); err != nil {
		return err
	}
	sys := c.Sys()
	if err := sys.PutPolicyWithContext(ctx, AdminPolicy(org), adminPolicyHCL(org)); err != nil {
		return fmt.Errorf("writing policy %s: %w", AdminPolicy(org), err)
	}
	if err := sys.PutPolicyWithContext(ctx, MemberPolicy(org), memberPolicyHCL(org)); err != nil {
		return fmt.Errorf("writing policy %s: %w", MemberPolicy(org), err)
	}
	if err := ensureAuth(ctx, c, "approle"); err != nil {
		return err
	}
	if err := writeAgentsPolicy(ctx, c, org); err != nil {
		return err
	}
	if err := ensureAuth(ctx, c, "userpass"); err != nil {
		return err
	}
	return setUserLockout(ctx, c)
}

// Vault's lockout of a userpass login after failed passwords, set
// deliberately rather than left at Vault's default (5 failures, 15
// minutes): the portal lets one client address fail only
// SignInFailuresPerAddress times per account in that window, so no single
// address reaches the threshold and locks a person out for everyone.
const (
	UserLockoutThreshold = 10
	UserLockoutDuration  = 15 * time.Minute
)

// setUserLockout writes the lockout settings on the userpass mount.
func setUserLockout(ctx context.Context, c *api.Client) error {
	_, err := c.Logical().WriteWithContext(ctx, "sys/auth/userpass/tune", map[string]interface{}{
		"user_lockout_config": map[string]interface{}{
			"lockout_threshold":              UserLockoutThreshold,
			"lockout_duration":               UserLockoutDuration.String(),
			"lockout_counter_reset_duration": UserLockoutDuration.String(),
		},
	})
	if err != nil {
		return fmt.Errorf("setting the userpass lockout: %w", err)
	}
	return nil
}

func ensureMount(ctx context.Context, c *api.Client, org string) error {
	path := contract.Mount(org)
	mounts, err := c.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return fmt.Errorf("listing mounts: %w", err)
	}
	if m, ok := mounts[path+"/"]; ok {
		if m.Type != PluginName {
			return fmt.Errorf("%s/ is already mounted with engine %q, not %q", path, m.Type, PluginName)
		}
		return nil
	}
	err = c.Sys().MountWithContext(ctx, path, &api.MountInput{
		Type:        PluginName,
		Description: "credentials of org " + org,
	})
	if err != nil {
		return fmt.Errorf("mounting %s: %w", path, err)
	}
	return nil
}

func ensureAuth(ctx context.Context, c *api.Client, method string) error {
	auths, err := c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("listing auth methods: %w", err)
	}
	if a, ok := auths[method+"/"]; ok {
		if a.Type != method {
			return fmt.Errorf("auth path %s/ holds method %q, not %q", method, a.Type, method)
		}
		return nil
	}
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, method, &api.EnableAuthOptions{Type: method}); err != nil {
		return fmt.Errorf("enabling auth method %s: %w", method, err)
	}
	return nil
}

// Role says which of an org's people policies a person gets.
type Role string

const (
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
	// RoleAgents manages the org's agents; see AgentsPolicy for why it is
	// separate from admin.
	RoleAgents Role = "agents"
)

// CreatePerson writes (or rewrites) a userpass login for a person of org
// with the given role's policy. Existing policies on the user are kept, so a
// person can belong to several orgs.
func CreatePerson(ctx context.Context, c *api.Client, org, username, password string, role Role) error {
	if err := ValidateOrgName(org); err != nil {
		return err
	}
	var policy string
	switch role {
	case RoleAdmin:
		policy = AdminPolicy(org)
	case RoleMember:
		policy = MemberPolicy(org)
	case RoleAgents:
		policy = AgentsPolicy(org)
	default:
		return fmt.Errorf("role must be %q, %q or %q, not %q", RoleAdmin, RoleMember, RoleAgents, role)
	}
	if username == "" || strings.ContainsAny(username, "/ ") {
		return fmt.Errorf("username must be non-empty without '/' or spaces")
	}
	if len(password) < 8 {
		return fmt.Errorf("password must have at least 8 characters")
	}
	userPath := "auth/userpass/users/" + username
	policies := []string{policy}
	existing, err := c.Logical().ReadWithContext(ctx, userPath)
	if err != nil {
		return fmt.Errorf("reading user %s: %w", username, err)
	}
	if existing != nil {
		if ps, ok := existing.Data["token_policies"].([]interface{}); ok {
			for _, p := range ps {
				if s, ok := p.(string); ok && s != policy {
					policies = append(policies, s)
				}
			}
		}
	}
	_, err = c.Logical().WriteWithContext(ctx, userPath, map[string]interface{}{
		"password":       password,
		"token_policies": strings.Join(policies, ","),
		"token_ttl":      "8h",
	})
	if err != nil {
		return fmt.Errorf("writing user %s: %w", username, err)
	}
	return nil
}
