package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
)

// An MCP client a person approves gets a secret ID of its agent's role of
// its own, whose metadata Vault copies onto every token it logs in: the
// grant it belongs to and the resource (RFC 8707) it is for. So the MCP
// server can tell a token minted for another org's resource, and
// disconnecting one client ends only its tokens.
const (
	MetaMCPGrant    = "mcp_grant"
	MetaMCPResource = "mcp_resource"
)

// NewMCPLogin makes a secret ID of agent's role for MCP grant, for
// resource, with c (a token holding the org's agents policy).
func NewMCPLogin(ctx context.Context, c *api.Client, org, agent, grant, resource string) (*AgentLogin, error) {
	if err := ValidateOrgName(org); err != nil {
		return nil, err
	}
	if !agentNamePattern.MatchString(agent) {
		return nil, fmt.Errorf("%w: %q", ErrAgentNotFound, agent)
	}
	rolePath := "auth/approle/role/" + AgentName(org, agent)
	rid, err := c.Logical().ReadWithContext(ctx, rolePath+"/role-id")
	if err != nil {
		return nil, fmt.Errorf("reading the role id of agent %s: %w", agent, err)
	}
	if rid == nil {
		return nil, fmt.Errorf("%w: %s", ErrAgentNotFound, agent)
	}
	meta, err := json.Marshal(map[string]string{MetaMCPGrant: grant, MetaMCPResource: resource})
	if err != nil {
		return nil, err
	}
	sid, err := c.Logical().WriteWithContext(ctx, rolePath+"/secret-id", map[string]interface{}{"metadata": string(meta)})
	if err != nil || sid == nil {
		return nil, fmt.Errorf("making a secret id for agent %s: %w", agent, errOrMissing(err))
	}
	login := &AgentLogin{}
	login.RoleID, _ = rid.Data["role_id"].(string)
	login.SecretID, _ = sid.Data["secret_id"].(string)
	login.SecretIDAccessor, _ = sid.Data["secret_id_accessor"].(string)
	return login, nil
}

// DestroySecretID removes one secret ID of agent's role by its accessor;
// one already gone is not an error.
func DestroySecretID(ctx context.Context, c *api.Client, org, agent, accessor string) error {
	if !agentNamePattern.MatchString(agent) || accessor == "" {
		return nil
	}
	_, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/"+AgentName(org, agent)+"/secret-id-accessor/destroy",
		map[string]interface{}{"secret_id_accessor": accessor})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("destroying a secret id of agent %s: %w", agent, err)
	}
	return nil
}

// EndMCPGrant disconnects org's MCP client of grant: the engine forgets the
// grant, its secret ID is destroyed and its live tokens are revoked, so its
// next call is refused. It answers the grant's agent ("" when there was no
// such grant) and how many tokens were revoked.
func EndMCPGrant(ctx context.Context, c *api.Client, org, grant string) (agent string, revoked int, err error) {
	sec, err := c.Logical().DeleteWithContext(ctx, MCPGrantsPath(org)+grant)
	if err != nil {
		return "", 0, fmt.Errorf("deleting MCP grant %s: %w", grant, err)
	}
	if sec == nil {
		return "", 0, nil
	}
	agent, _ = sec.Data["agent"].(string)
	accessor, _ := sec.Data["secret_id_accessor"].(string)
	if err := DestroySecretID(ctx, c, org, agent, accessor); err != nil {
		return agent, 0, err
	}
	var accessors []string
	list, _ := sec.Data["token_accessors"].([]interface{})
	for _, a := range list {
		if a, ok := a.(string); ok {
			accessors = append(accessors, a)
		}
	}
	revoked, err = RevokeMCPTokens(ctx, c, grant, accessors)
	return agent, revoked, err
}

// endAgentMCPGrants disconnects every MCP client of agent.
func endAgentMCPGrants(ctx context.Context, c *api.Client, org, agent string) error {
	sec, err := c.Logical().ListWithContext(ctx, MCPGrantsPath(org))
	if err != nil {
		return fmt.Errorf("listing the MCP clients of agent %s: %w", agent, err)
	}
	if sec == nil {
		return nil
	}
	keys, _ := sec.Data["keys"].([]interface{})
	infos, _ := sec.Data["key_info"].(map[string]interface{})
	for _, k := range keys {
		grant, _ := k.(string)
		info, _ := infos[grant].(map[string]interface{})
		if a, _ := info["agent"].(string); a != agent || grant == "" {
			continue
		}
		if _, _, err := EndMCPGrant(ctx, c, org, grant); err != nil {
			return err
		}
	}
	return nil
}

// RevokeMCPTokens revokes the tokens of MCP grant among accessors. Each is
// looked up first and revoked only if Vault says it is that grant's: the
// engine recorded the accessors on the client's word.
func RevokeMCPTokens(ctx context.Context, c *api.Client, grant string, accessors []string) (revoked int, err error) {
	for _, acc := range accessors {
		sec, err := c.Logical().WriteWithContext(ctx, "auth/token/lookup-accessor", map[string]interface{}{"accessor": acc})
		if err != nil {
			if isNotFound(err) || isBadAccessor(err) {
				continue // expired or revoked already
			}
			return revoked, fmt.Errorf("looking up a token of the grant: %w", err)
		}
		if sec == nil {
			continue
		}
		meta, _ := sec.Data["meta"].(map[string]interface{})
		if g, _ := meta[MetaMCPGrant].(string); g != grant {
			continue
		}
		if _, err := c.Logical().WriteWithContext(ctx, "auth/token/revoke-accessor", map[string]interface{}{"accessor": acc}); err != nil && !isBadAccessor(err) {
			return revoked, fmt.Errorf("revoking a token of the grant: %w", err)
		}
		revoked++
	}
	return revoked, nil
}

// MCPGrantsPath is where the engine keeps org's MCP grants.
func MCPGrantsPath(org string) string { return contract.Mount(org) + "/mcp/grants/" }

func isNotFound(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

// isBadAccessor is Vault's answer for an accessor whose token is gone.
func isBadAccessor(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, "invalid accessor") {
			return true
		}
	}
	return false
}
