package provision

// The Vault policies of agents and of the people who manage them.

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
)

// agentPolicyHCL grants each credential's Vault paths: for an SMTP
// credential, mail/<cred>; for any other, the broker paths, narrowed when
// the spec says so. Each credential's base path may also be read, which
// describes it (the MCP server lists an agent's tools that way). Then the
// few token paths an agent uses instead of Vault's default policy (which it
// does not hold: building a token's ACL from the large default policy
// costs every call).
func agentPolicyHCL(org string, s AgentSpec, current map[string]credInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Agent %s of org %s: these credentials only.\n", s.Name, org)
	creds := slices.Clone(s.Creds)
	sort.Strings(creds)
	writePath := func(p string, caps ...string) {
		fmt.Fprintf(&b, "path %q {\n  capabilities = %s\n}\n", p, hclList(caps))
	}
	for _, c := range slices.Compact(creds) {
		if current[c].mail() {
			writePath(contract.UsePath(org, contract.UseMail, c), "read", "update")
			continue
		}
		base := contract.UsePath(org, contract.UseProxy, c)
		paths := agentCredPaths(base, s)
		if !slices.Contains(paths, base) {
			writePath(base, "read")
		}
		for _, t := range slices.Compact(slices.Sorted(slices.Values(s.DenyTools))) {
			writePath(base+"/"+contract.MethodTool+"/"+t, "deny")
		}
		for _, p := range paths {
			if p == base {
				writePath(p, "read", "update")
			} else {
				writePath(p, "update")
			}
		}
	}
	writePath(contract.Mount(org)+"/agent-settings", "read")
	// The edge reports this agent's calls for its trail, signed with a key
	// only the edge holds: the token alone cannot write a line.
	writePath(contract.Mount(org)+"/trail-report", "update")
	// Calls held for a person's approval: the edge asks for one (signed
	// like the trail), waits on it and spends it; the engine shows an
	// agent its own approvals only, and never lets one decide.
	writePath(contract.Mount(org)+"/approvals/request", "update")
	writePath(contract.Mount(org)+"/approvals/+", "read")
	writePath(contract.Mount(org)+"/approvals/+/use", "update")
	writePath(contract.Mount(org)+"/approvals/match", "update")
	// The edge leases the calls the org's limits allow this agent.
	writePath(contract.Mount(org)+"/limits/lease", "update")
	writePath(contract.Mount(org)+"/limits/spend", "update")
	b.WriteString(`# The edge asks Vault whether this token may make each call.
path "sys/capabilities-self" {
  capabilities = ["update"]
}
# The MCP server asks Vault which credentials this token may use.
path "sys/internal/ui/resultant-acl" {
  capabilities = ["read"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
`)
	return b.String()
}

// agentCredPaths are the Vault paths one credential's rules grant. Without
// rules: the credential's Vault path with method and path as fields, and
// every method and path below it (remote tools included). With rules: only
// the paths that name an allowed method and path, and the allowed remote
// tools (TOOL/<tool>, with TOOL itself for listing them).
func agentCredPaths(base string, s AgentSpec) []string {
	if len(s.Methods) == 0 && len(s.Paths) == 0 && len(s.Tools) == 0 {
		return []string{base, base + "/*"}
	}
	var out []string
	if len(s.Tools) > 0 {
		out = append(out, base+"/"+contract.MethodTool)
		for _, t := range s.Tools {
			out = append(out, base+"/"+contract.MethodTool+"/"+t)
		}
		if len(s.Methods) == 0 && len(s.Paths) == 0 {
			sort.Strings(out)
			return slices.Compact(out)
		}
	}
	methods := slices.Clone(s.Methods)
	if len(methods) == 0 {
		methods = []string{"+"}
	}
	paths := slices.Clone(s.Paths)
	if len(paths) == 0 {
		paths = []string{"/*"}
	}
	for _, m := range methods {
		for _, p := range paths {
			out = append(out, base+"/"+m+p)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// hclList writes values (checked against patterns without quotes or
// backslashes) as an HCL list.
func hclList(values []string) string {
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = fmt.Sprintf("%q", v)
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}

// agentsPolicyHCL lets its holders create and remove the org's agents.
func agentsPolicyHCL(org, approleAccessor string) string {
	p := agentPrefix(org)
	return fmt.Sprintf(`# Agent managers of org %[1]s.
# Vault's ACL cannot limit what a policy contains, and an AppRole role may
# name any policy: whoever holds this policy can give an agent (and so
# themselves) any capability in this Vault, far beyond org %[1]s. Give it
# only to people trusted like operators.
path "sys/policies/acl/%[2]s*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "auth/approle/role/%[2]s*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}
# Listing shows the names of every org's AppRole roles; only this org's
# are used.
path "auth/approle/role" {
  capabilities = ["list"]
}
# The agent's entity: deleting it ends the agent's tokens. No policies may
# be set on it.
path "identity/entity/name/%[2]s*" {
  capabilities = ["create", "read", "update", "delete"]
  allowed_parameters = {
    "metadata" = []
    "disabled" = []
  }
}
path "identity/entity-alias" {
  capabilities = ["create", "update"]
  allowed_parameters = {
    "name" = []
    "canonical_id" = []
    "mount_accessor" = [%[3]q]
  }
}
path "sys/auth" {
  capabilities = ["read"]
}
path "%[4]s/creds/" {
  capabilities = ["list"]
}
# MCP clients people approve for the org's agents: the grants in the engine,
# and the tokens of a disconnected client (looked up first: only those of
# the grant are revoked).
path "%[4]s/mcp/grants/" {
  capabilities = ["list"]
}
path "%[4]s/mcp/grants/*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}
# Telling the org's webhooks of agents made and removed.
path "%[4]s/agent-events" {
  capabilities = ["update"]
}
`, org, p, approleAccessor, contract.Mount(org))
}

// writeAgentsPolicy writes the org's agent-managers policy; approle must be
// enabled.
func writeAgentsPolicy(ctx context.Context, c *api.Client, org string) error {
	acc, err := approleAccessor(ctx, c)
	if err != nil {
		return err
	}
	if err := c.Sys().PutPolicyWithContext(ctx, AgentsPolicy(org), agentsPolicyHCL(org, acc)); err != nil {
		return fmt.Errorf("writing policy %s: %w", AgentsPolicy(org), err)
	}
	return nil
}
