package provision

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
)

// An agent of an org is an AppRole role, orgs-<org>-agent-<name>, whose
// tokens hold one policy of the same name and not Vault's default policy:
// update on the broker paths of each credential it may use, optionally
// narrowed to some methods and paths. Rules are Vault ACL paths over
// orgs/<org>/proxy/<cred>/<METHOD>/<path>, so Vault itself decides them,
// segment by segment, for the engine's Vault path and the portal's edge
// alike; the query is never part of them. Each agent also has a Vault entity of the
// same name, tied to its role, so that deleting the agent ends its tokens at
// once (Vault denies every token whose entity is gone) and the broker can
// record which agent used a credential.

// DefaultAgentTokenTTL is an agent token's life unless the spec says
// otherwise: short, so a leaked token is soon useless.
const DefaultAgentTokenTTL = 15 * time.Minute

// Errors of agent management, for callers to tell apart.
var (
	ErrAgentExists   = errors.New("agent already exists")
	ErrAgentNotFound = errors.New("agent does not exist")
	ErrBadAgentSpec  = errors.New("invalid agent")
)

// AgentsPolicy names the policy that lets a person manage an org's agents.
func AgentsPolicy(org string) string { return "orgs-" + org + "-agents" }

// AgentName is the AppRole role, policy and entity name of an org's agent.
func AgentName(org, name string) string { return agentPrefix(org) + name }

// AgentShortName is the name an agent was created with, given its entity
// name; any other name is returned as it is.
func AgentShortName(org, entity string) string {
	if short, ok := strings.CutPrefix(entity, agentPrefix(org)); ok && short != "" {
		return short
	}
	return entity
}

func agentPrefix(org string) string { return "orgs-" + org + "-agent-" }

// agentNamePattern keeps agent names short and plain: they end up in role,
// policy and entity names and in URLs.
var agentNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,47}$`)

// pathSegmentPattern is one literal segment of a rule: the characters of
// a decoded URL path segment that need no quoting in a Vault policy.
var pathSegmentPattern = regexp.MustCompile(`^[A-Za-z0-9_.~:@!&'(),;=$-]+$`)

var agentMethods = contract.Methods

// AgentSpec says what an agent may do.
type AgentSpec struct {
	// Name is the agent's name within the org.
	Name string
	// Creds are the credentials it may use through the broker.
	Creds []string
	// Methods, when set, are the only HTTP methods it may send.
	Methods []string
	// Paths, when set, are the only paths it may call, matched segment by
	// segment: "/v1/balance" (exactly), "/v1/charges/*" (anything below),
	// "/v1/customers/+/sources" (one segment of any name). The query is
	// never matched.
	Paths []string
	// Tools, when set, are the tools of the credentials' remote MCP
	// servers (mcp_url) it may call, by the remote server's name
	// (create_issue), or "*" for all; without Methods or Paths beside them
	// it may call those tools only, not the service's HTTP API.
	Tools []string
	// DenyTools are remote tools it may never call, whatever else allows.
	DenyTools []string
	// TokenTTL is its tokens' life (default 15 minutes); TokenMaxTTL how
	// long renewals may extend it (default: TokenTTL, no renewal).
	TokenTTL    time.Duration
	TokenMaxTTL time.Duration
}

// AgentLogin is an agent's AppRole login. The secret ID is shown once and
// kept nowhere else.
type AgentLogin struct {
	RoleID           string `json:"role_id"`
	SecretID         string `json:"secret_id"`
	SecretIDAccessor string `json:"secret_id_accessor"`
}

// Agent describes an existing agent; nothing in it is secret.
type Agent struct {
	Name  string   `json:"name"`
	Creds []string `json:"credentials"`
	// Stale are the credentials it was given that it can no longer use:
	// deleted, or deleted and created again.
	Stale     []string      `json:"stale_credentials,omitempty"`
	Methods   []string      `json:"methods,omitempty"`
	Paths     []string      `json:"paths,omitempty"`
	Tools     []string      `json:"tools,omitempty"`
	DenyTools []string      `json:"deny_tools,omitempty"`
	TokenTTL  time.Duration `json:"token_ttl"`
	// Stopped says the kill switch stopped it: Vault refuses its tokens
	// and it has no secret ID; an agent manager deletes and creates it
	// again to bring it back.
	Stopped bool `json:"stopped,omitempty"`
}

func (s *AgentSpec) validate(org string) error {
	if err := ValidateOrgName(org); err != nil {
		return err
	}
	if !agentNamePattern.MatchString(s.Name) {
		return fmt.Errorf("%w: name must be 1-48 lowercase letters, digits or '-', starting with a letter or digit", ErrBadAgentSpec)
	}
	if len(s.Creds) == 0 {
		return fmt.Errorf("%w: name at least one credential the agent may use", ErrBadAgentSpec)
	}
	for _, c := range s.Creds {
		if !contract.ValidCredName(c) {
			return fmt.Errorf("%w: %q is not a credential name", ErrBadAgentSpec, c)
		}
	}
	for _, m := range s.Methods {
		if !slices.Contains(agentMethods, m) {
			return fmt.Errorf("%w: method %q is not one of %s", ErrBadAgentSpec, m, strings.Join(agentMethods, ", "))
		}
	}
	for _, p := range s.Paths {
		if err := validatePathRule(p); err != nil {
			return fmt.Errorf("%w: path %q: %v", ErrBadAgentSpec, p, err)
		}
	}
	for _, t := range s.Tools {
		if t != "*" && !contract.ValidToolName(t) {
			return fmt.Errorf("%w: tool %q: a tool name is 1 to 128 of A-Z, a-z, 0-9, '_', '-' and '.', or * for every tool", ErrBadAgentSpec, t)
		}
	}
	for _, t := range s.DenyTools {
		if !contract.ValidToolName(t) {
			return fmt.Errorf("%w: denied tool %q: a tool name is 1 to 128 of A-Z, a-z, 0-9, '_', '-' and '.'", ErrBadAgentSpec, t)
		}
		if slices.Contains(s.Tools, t) {
			return fmt.Errorf("%w: tool %q is both allowed and denied", ErrBadAgentSpec, t)
		}
	}
	if s.TokenTTL == 0 {
		s.TokenTTL = DefaultAgentTokenTTL
	}
	if s.TokenMaxTTL == 0 {
		s.TokenMaxTTL = s.TokenTTL
	}
	if s.TokenTTL < time.Second || s.TokenMaxTTL < s.TokenTTL {
		return fmt.Errorf("%w: token TTL must be at least 1s and no longer than its maximum", ErrBadAgentSpec)
	}
	return nil
}

// validatePathRule checks one path rule: contract's rule (literal
// segments, '+' for one, a last '*' for anything below), with segments
// a Vault policy path can hold unquoted.
func validatePathRule(p string) error {
	if err := contract.ValidatePathRule(p); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "is "))
	}
	for _, seg := range strings.Split(p, "/")[1:] {
		if seg != "" && seg != "+" && seg != "*" && !pathSegmentPattern.MatchString(seg) {
			return errors.New("segments hold letters, digits and - _ . ~ : @ ! & ' ( ) , ; = $ (empty segments are never called)")
		}
	}
	return nil
}

func approleAccessor(ctx context.Context, c *api.Client) (string, error) {
	auths, err := c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return "", fmt.Errorf("listing auth methods: %w", err)
	}
	a, ok := auths["approle/"]
	if !ok || a.Type != "approle" {
		return "", errors.New("the approle auth method is not enabled at approle/: run `portal org create` first")
	}
	return a.Accessor, nil
}

// CreateAgent creates an agent of org with c (a token holding the org's
// agents policy, or an operator's) and returns its login, once. An agent
// that exists is not changed: delete it first, so that no old secret ID
// lives on.
func CreateAgent(ctx context.Context, c *api.Client, org string, spec AgentSpec) (*AgentLogin, error) {
	if err := spec.validate(org); err != nil {
		return nil, err
	}
	name := AgentName(org, spec.Name)
	rolePath := "auth/approle/role/" + name
	existing, err := c.Logical().ReadWithContext(ctx, rolePath)
	if err != nil {
		return nil, fmt.Errorf("reading role %s: %w", name, err)
	}
	if existing != nil {
		return nil, fmt.Errorf("%w: %s; delete it first", ErrAgentExists, spec.Name)
	}
	acc, err := approleAccessor(ctx, c)
	if err != nil {
		return nil, err
	}

	login, err := createAgentParts(ctx, c, org, name, acc, spec)
	if err != nil {
		// Leave nothing half made: a role without its entity would issue
		// tokens that deleting the agent could not end.
		if rbErr := deleteAgent(context.WithoutCancel(ctx), c, org, spec.Name); rbErr != nil && !errors.Is(rbErr, ErrAgentNotFound) {
			err = fmt.Errorf("%w (and removing the partial agent: %v)", err, rbErr)
		}
		return nil, err
	}
	announceAgent(ctx, c, org, spec.Name, "agent.created")
	return login, nil
}

// announceAgent tells the org's webhooks of an agent made or removed. It
// is best effort: the agent is made or removed whether or not the engine
// takes the event (an org provisioned before webhooks has no policy for
// it until its policies are written again).
func announceAgent(ctx context.Context, c *api.Client, org, agent, event string) {
	_, _ = c.Logical().WriteWithContext(ctx, contract.Mount(org)+"/agent-events", map[string]interface{}{"event": event, "agent": agent})
}

func createAgentParts(ctx context.Context, c *api.Client, org, name, approleAcc string, spec AgentSpec) (*AgentLogin, error) {
	current, err := currentCredentials(ctx, c, org)
	if err != nil {
		return nil, err
	}
	if err := c.Sys().PutPolicyWithContext(ctx, name, agentPolicyHCL(org, spec, current)); err != nil {
		return nil, fmt.Errorf("writing policy %s: %w", name, err)
	}
	rolePath := "auth/approle/role/" + name
	_, err = c.Logical().WriteWithContext(ctx, rolePath, map[string]interface{}{
		"token_policies": []string{name},
		"token_ttl":      int(spec.TokenTTL.Seconds()),
		"token_max_ttl":  int(spec.TokenMaxTTL.Seconds()),
		"token_type":     "service",
		// The agent's own policy carries the few default paths it needs.
		"token_no_default_policy": true,
		"bind_secret_id":          true,
		"secret_id_num_uses":      0,
		"secret_id_ttl":           0,
	})
	if err != nil {
		return nil, fmt.Errorf("writing role %s: %w", name, err)
	}
	rid, err := c.Logical().ReadWithContext(ctx, rolePath+"/role-id")
	if err != nil || rid == nil {
		return nil, fmt.Errorf("reading role id of %s: %w", name, errOrMissing(err))
	}
	roleID, _ := rid.Data["role_id"].(string)

	ids := credentialIDs(current, spec.Creds)
	entPath := "identity/entity/name/" + name
	if _, err := c.Logical().WriteWithContext(ctx, entPath, map[string]interface{}{
		"metadata": map[string]string{contract.MetaOrg: org, contract.MetaAgent: spec.Name, contract.MetaCredentialIDs: ids},
	}); err != nil {
		return nil, fmt.Errorf("creating entity %s: %w", name, err)
	}
	ent, err := c.Logical().ReadWithContext(ctx, entPath)
	if err != nil || ent == nil {
		return nil, fmt.Errorf("reading entity %s: %w", name, errOrMissing(err))
	}
	entityID, _ := ent.Data["id"].(string)
	if _, err := c.Logical().WriteWithContext(ctx, "identity/entity-alias", map[string]interface{}{
		"name":           roleID,
		"canonical_id":   entityID,
		"mount_accessor": approleAcc,
	}); err != nil {
		return nil, fmt.Errorf("tying role %s to its entity: %w", name, err)
	}

	sec, err := c.Logical().WriteWithContext(ctx, rolePath+"/secret-id", map[string]interface{}{
		"metadata": fmt.Sprintf(`{"org":%q,"agent":%q}`, org, spec.Name),
	})
	if err != nil || sec == nil {
		return nil, fmt.Errorf("creating secret id of %s: %w", name, errOrMissing(err))
	}
	secretID, _ := sec.Data["secret_id"].(string)
	accessor, _ := sec.Data["secret_id_accessor"].(string)
	return &AgentLogin{RoleID: roleID, SecretID: secretID, SecretIDAccessor: accessor}, nil
}

// credentialIDs records which credential each name is now: "name:id,...",
// "-" for a name with no credential yet. The engine refuses the agent a
// credential whose ID differs, so a credential deleted and created again
// under the same name is not silently the agent's.
func credentialIDs(current map[string]credInfo, creds []string) string {
	names := slices.Clone(creds)
	sort.Strings(names)
	var parts []string
	for _, name := range slices.Compact(names) {
		parts = append(parts, name+":"+idOrNone(current, name))
	}
	return strings.Join(parts, ",")
}

// credInfo is what provisioning needs to know of a credential.
type credInfo struct {
	// ID is "" for a credential from before IDs.
	ID      string
	Type    string
	Service string
}

// mail says whether agents use the credential through mail/<cred>: an
// SMTP login. A name with no credential yet is taken as an HTTP one.
func (c credInfo) mail() bool { return c.Type == "password" && c.Service == "smtp" }

// currentCredentials lists the org's credentials (LIST creds/ key_info,
// which agent managers may read: names and metadata, no secret).
func currentCredentials(ctx context.Context, c *api.Client, org string) (map[string]credInfo, error) {
	s, err := c.Logical().ListWithContext(ctx, contract.Mount(org)+"/creds")
	if err != nil {
		return nil, fmt.Errorf("listing credentials: %w", err)
	}
	out := map[string]credInfo{}
	if s == nil {
		return out, nil
	}
	info, _ := s.Data["key_info"].(map[string]interface{})
	keys, _ := s.Data["keys"].([]interface{})
	for _, k := range keys {
		name, _ := k.(string)
		entry, _ := info[name].(map[string]interface{})
		var ci credInfo
		ci.ID, _ = entry["id"].(string)
		ci.Type, _ = entry["type"].(string)
		ci.Service, _ = entry["service"].(string)
		out[name] = ci
	}
	return out, nil
}

func idOrNone(current map[string]credInfo, name string) string {
	if ci, ok := current[name]; ok {
		return ci.ID
	}
	return "-"
}

func errOrMissing(err error) error {
	if err != nil {
		return err
	}
	return errors.New("no data returned")
}

// DeleteAgent removes an agent: first its entity, which makes Vault deny
// every token the agent holds, then its role (with its secret IDs) and its
// policy. Parts already gone are skipped, so a failed delete can be run
// again.
func DeleteAgent(ctx context.Context, c *api.Client, org, agent string) error {
	if err := deleteAgent(ctx, c, org, agent); err != nil {
		return err
	}
	announceAgent(ctx, c, org, agent, "agent.revoked")
	return nil
}

func deleteAgent(ctx context.Context, c *api.Client, org, agent string) error {
	if err := ValidateOrgName(org); err != nil {
		return err
	}
	if !agentNamePattern.MatchString(agent) {
		return fmt.Errorf("%w: %q", ErrAgentNotFound, agent)
	}
	name := AgentName(org, agent)
	// Its MCP clients first, while the role whose secret IDs they hold is
	// there: their tokens are revoked, not merely left without a policy.
	if err := endAgentMCPGrants(ctx, c, org, agent); err != nil {
		return err
	}
	found := false
	steps := []struct {
		what, read, del string
	}{
		{"entity", "identity/entity/name/" + name, "identity/entity/name/" + name},
		{"role", "auth/approle/role/" + name, "auth/approle/role/" + name},
		{"policy", "sys/policies/acl/" + name, "sys/policies/acl/" + name},
	}
	for _, st := range steps {
		s, err := c.Logical().ReadWithContext(ctx, st.read)
		if err != nil {
			return fmt.Errorf("reading %s %s: %w", st.what, name, err)
		}
		if s == nil {
			continue
		}
		found = true
		if _, err := c.Logical().DeleteWithContext(ctx, st.del); err != nil {
			return fmt.Errorf("deleting %s %s: %w", st.what, name, err)
		}
	}
	if !found {
		return fmt.Errorf("%w: %s", ErrAgentNotFound, agent)
	}
	return nil
}

// ListAgents returns org's agents, read from their roles and policies.
func ListAgents(ctx context.Context, c *api.Client, org string) ([]Agent, error) {
	if err := ValidateOrgName(org); err != nil {
		return nil, err
	}
	s, err := c.Logical().ListWithContext(ctx, "auth/approle/role")
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	var keys []interface{}
	if s != nil {
		keys, _ = s.Data["keys"].([]interface{})
	}
	prefix := agentPrefix(org)
	agents := []Agent{}
	current, err := currentCredentials(ctx, c, org)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		role, _ := k.(string)
		name, ok := strings.CutPrefix(role, prefix)
		if !ok || !agentNamePattern.MatchString(name) {
			continue
		}
		a, err := readAgent(ctx, c, org, name, current)
		if err != nil {
			return nil, err
		}
		if a != nil {
			agents = append(agents, *a)
		}
	}
	sort.Slice(agents, func(i, j int) bool { return agents[i].Name < agents[j].Name })
	return agents, nil
}

// policyRules is the part of a Vault policy an agent's description needs.
type policyRules struct {
	Path map[string]*struct {
		Capabilities []string `hcl:"capabilities"`
	} `hcl:"path"`
}

// readAgent describes one agent; current are the org's credential IDs now
// (currentCredentialIDs), read once for all agents listed.
func readAgent(ctx context.Context, c *api.Client, org, agent string, current map[string]credInfo) (*Agent, error) {
	name := AgentName(org, agent)
	role, err := c.Logical().ReadWithContext(ctx, "auth/approle/role/"+name)
	if err != nil {
		return nil, fmt.Errorf("reading role %s: %w", name, err)
	}
	if role == nil {
		return nil, nil
	}
	a := &Agent{Name: agent, Creds: []string{}}
	if ttl, err := parseSeconds(role.Data["token_ttl"]); err == nil {
		a.TokenTTL = ttl
	}
	text, err := c.Sys().GetPolicyWithContext(ctx, name)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
			return a, nil
		}
		return nil, fmt.Errorf("reading policy %s: %w", name, err)
	}
	var rules policyRules
	if err := hcl.Decode(&rules, text); err != nil {
		// Edited by hand beyond what we write: show the agent without
		// details rather than fail the list.
		return a, nil
	}
	proxyPrefix, mailPrefix := contract.UsePath(org, contract.UseProxy, ""), contract.UsePath(org, contract.UseMail, "")
	var methods, paths, tools, denyTools []string
	for p, r := range rules.Path {
		if r != nil && slices.Contains(r.Capabilities, "deny") {
			if rest, ok := strings.CutPrefix(p, proxyPrefix); ok {
				if _, tool, ok := strings.Cut(rest, "/"+contract.MethodTool+"/"); ok {
					denyTools = append(denyTools, tool)
				}
			}
			continue
		}
		if r == nil || !slices.Contains(r.Capabilities, "update") {
			continue
		}
		if cred, ok := strings.CutPrefix(p, mailPrefix); ok {
			a.Creds = append(a.Creds, cred)
			continue
		}
		rest, ok := strings.CutPrefix(p, proxyPrefix)
		if !ok {
			continue
		}
		cred, rule, _ := strings.Cut(rest, "/")
		a.Creds = append(a.Creds, cred)
		if rule == "" || rule == "*" {
			continue
		}
		method, path, _ := strings.Cut(rule, "/")
		if method == contract.MethodTool {
			if path != "" {
				tools = append(tools, path)
			}
			continue
		}
		if method != "+" {
			methods = append(methods, method)
		}
		if path != "*" {
			paths = append(paths, "/"+path)
		}
	}
	a.Creds = compactSorted(a.Creds)
	a.Methods = compactSorted(methods)
	a.Paths = compactSorted(paths)
	a.Tools = compactSorted(tools)
	a.DenyTools = compactSorted(denyTools)
	if a.Stale, a.Stopped, err = staleCredentials(ctx, c, name, a.Creds, current); err != nil {
		return nil, err
	}
	return a, nil
}

// staleCredentials compares the IDs the agent's entity recorded with the
// credentials there are now; stopped says the entity is disabled (the
// kill switch).
func staleCredentials(ctx context.Context, c *api.Client, entity string, creds []string, current map[string]credInfo) (stale []string, stopped bool, err error) {
	ent, err := c.Logical().ReadWithContext(ctx, "identity/entity/name/"+entity)
	if err != nil || ent == nil {
		return nil, false, err
	}
	stopped, _ = ent.Data["disabled"].(bool)
	md, _ := ent.Data["metadata"].(map[string]interface{})
	recorded, _ := md[contract.MetaCredentialIDs].(string)
	if recorded == "" {
		return nil, stopped, nil
	}
	given := map[string]string{}
	for _, g := range strings.Split(recorded, ",") {
		name, id, _ := strings.Cut(g, ":")
		given[name] = id
	}
	for _, name := range creds {
		now := idOrNone(current, name)
		if was, ok := given[name]; now == "-" || (ok && was != "" && was != now) {
			stale = append(stale, name)
		}
	}
	return stale, stopped, nil
}

// IsStale says whether the agent was given credential name but can no
// longer use it.
func (a Agent) IsStale(name string) bool { return slices.Contains(a.Stale, name) }

func compactSorted(v []string) []string {
	sort.Strings(v)
	return slices.Compact(v)
}

func parseSeconds(v interface{}) (time.Duration, error) {
	switch n := v.(type) {
	case nil:
		return 0, errors.New("missing")
	case interface{ Int64() (int64, error) }:
		secs, err := n.Int64()
		return time.Duration(secs) * time.Second, err
	case float64:
		return time.Duration(n) * time.Second, nil
	}
	return 0, fmt.Errorf("unexpected %T", v)
}
