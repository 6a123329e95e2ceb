package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
)

// The kill switch's agents part, done with the person's token (it needs
// the org's agents policy): the engine holds no Vault token. An agent is
// stopped, not deleted, so its definition and trail stay to be looked
// into: its entity is disabled first, which makes Vault refuse every
// token it holds on the next call (the edge's per-call check included),
// then its secret IDs are destroyed and its MCP clients disconnected, so
// no new token can be had. Only an agent manager brings it back, by
// deleting and creating it again.

// Outcomes of a receipt, as the engine's revoke-all names them.
const (
	OutcomeRevoked      = "revoked"
	OutcomeNotRevocable = "not_revocable"
	OutcomeFailed       = "failed"
)

// Receipt says what became of one agent.
type Receipt struct {
	Name    string `json:"name"`
	Outcome string `json:"outcome"`
	Detail  string `json:"detail"`
}

// KillSwitch is a kill switch to pull: the org's agents and grants
// (Scope "org"), one agent ("agent") or one credential's grant
// ("credential"). Confirm must name the scope's target.
type KillSwitch struct {
	Scope         string
	Agent         string
	Credential    string
	IncludeGrants bool
	Confirm       string
	// SkipAgents leaves the agents alone, for a person without the agents
	// policy: only the grants are revoked.
	SkipAgents bool
}

// ErrNotConfirmed is a kill switch whose Confirm does not name its scope.
var ErrNotConfirmed = errors.New("the confirmation does not name the scope")

// PullKillSwitch stops the agents k names, then asks the engine to revoke
// the grants and keep the agents' receipts; it answers the engine's job ID
// and the agents' receipts. Nothing is done unless k is confirmed.
func PullKillSwitch(ctx context.Context, c *api.Client, org string, k KillSwitch) (string, []Receipt, error) {
	if err := ValidateOrgName(org); err != nil {
		return "", nil, err
	}
	target := org
	switch k.Scope {
	case "org":
	case "agent":
		target = k.Agent
		if !agentNamePattern.MatchString(k.Agent) {
			return "", nil, fmt.Errorf("%w: %q", ErrAgentNotFound, k.Agent)
		}
	case "credential":
		target = k.Credential
	default:
		return "", nil, fmt.Errorf("scope must be org, agent or credential, not %q", k.Scope)
	}
	if k.Confirm != target {
		return "", nil, fmt.Errorf("%w: type %s to confirm", ErrNotConfirmed, target)
	}
	receipts := []Receipt{}
	switch {
	case k.SkipAgents && k.Scope == "agent":
		return "", nil, fmt.Errorf("stopping an agent takes the org's agents policy (%s)", AgentsPolicy(org))
	case k.SkipAgents:
	case k.Scope == "org":
		agents, err := agentNames(ctx, c, org)
		if err != nil {
			return "", nil, err
		}
		for _, a := range agents {
			receipts = append(receipts, StopAgent(ctx, c, org, a))
		}
	case k.Scope == "agent":
		receipts = append(receipts, StopAgent(ctx, c, org, k.Agent))
	}
	raw, err := json.Marshal(receipts)
	if err != nil {
		return "", nil, err
	}
	data := map[string]interface{}{"scope": k.Scope, "confirm": k.Confirm, "include_grants": k.IncludeGrants, "agent_receipts": string(raw)}
	switch k.Scope {
	case "agent":
		data["agent"] = k.Agent
	case "credential":
		data["credential"] = k.Credential
	}
	if k.Scope == "org" && len(receipts) == 0 && !k.IncludeGrants {
		return "", receipts, fmt.Errorf("the org has no agents, and its grants were not included: nothing to revoke")
	}
	s, err := c.Logical().WriteWithContext(ctx, contract.Mount(org)+"/revoke-all", data)
	if err != nil {
		return "", receipts, fmt.Errorf("starting the kill switch in the engine: %w", err)
	}
	if s == nil {
		return "", receipts, fmt.Errorf("starting the kill switch in the engine: no answer")
	}
	id, _ := s.Data["job_id"].(string)
	return id, receipts, nil
}

// agentNames lists the short names of org's agents, from their roles.
func agentNames(ctx context.Context, c *api.Client, org string) ([]string, error) {
	s, err := c.Logical().ListWithContext(ctx, "auth/approle/role")
	if err != nil {
		return nil, fmt.Errorf("listing the agents: %w", err)
	}
	if s == nil {
		return nil, nil
	}
	keys, _ := s.Data["keys"].([]interface{})
	names := []string{}
	for _, k := range keys {
		role, _ := k.(string)
		if name, ok := strings.CutPrefix(role, agentPrefix(org)); ok && agentNamePattern.MatchString(name) {
			names = append(names, name)
		}
	}
	return names, nil
}

// StopAgent stops one agent and says how it went; each step runs even if
// an earlier one failed, so a receipt says all that was done.
func StopAgent(ctx context.Context, c *api.Client, org, agent string) Receipt {
	name := AgentName(org, agent)
	r := Receipt{Name: agent, Outcome: OutcomeRevoked}
	var done, failed []string
	fail := func(what string, err error) {
		r.Outcome = OutcomeFailed
		failed = append(failed, what+": "+vaultErrorText(err))
	}

	entPath := "identity/entity/name/" + name
	if ent, err := c.Logical().ReadWithContext(ctx, entPath); err != nil {
		fail("reading its entity", err)
	} else if ent == nil {
		failed = append(failed, "it has no entity (its tokens are refused the credentials only if its role is gone)")
		r.Outcome = OutcomeFailed
	} else if _, err := c.Logical().WriteWithContext(ctx, entPath, map[string]interface{}{"disabled": true}); err != nil {
		fail("disabling its entity", err)
	} else {
		done = append(done, "entity disabled: Vault refuses every token it holds")
	}

	rolePath := "auth/approle/role/" + name
	destroyed := 0
	if s, err := c.Logical().ListWithContext(ctx, rolePath+"/secret-id"); err != nil && !isNotFound(err) {
		fail("listing its secret IDs", err)
	} else if s != nil {
		keys, _ := s.Data["keys"].([]interface{})
		for _, k := range keys {
			acc, _ := k.(string)
			if err := DestroySecretID(ctx, c, org, agent, acc); err != nil {
				fail("destroying a secret ID", err)
				continue
			}
			destroyed++
		}
	}
	done = append(done, fmt.Sprintf("%d secret IDs destroyed", destroyed))
	if err := endAgentMCPGrants(ctx, c, org, agent); err != nil {
		fail("disconnecting its MCP clients", err)
	}
	r.Detail = strings.Join(append(done, failed...), "; ")
	if r.Outcome == OutcomeRevoked {
		announceAgent(ctx, c, org, agent, "agent.revoked")
	}
	return r
}

// vaultErrorText is the gist of a Vault error, for a receipt.
func vaultErrorText(err error) string {
	var re *api.ResponseError
	if errors.As(err, &re) && len(re.Errors) > 0 {
		return fmt.Sprintf("HTTP %d: %s", re.StatusCode, strings.Join(re.Errors, "; "))
	}
	return err.Error()
}
