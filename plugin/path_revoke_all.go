package credentials

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/plugin/store"
)

// The kill switch. The engine's part: every OAuth grant of the org, or of
// one credential, revoked at its provider and dropped, as a job with an
// ID and a receipt per item. The engine holds no Vault token, by design,
// so the agents' tokens and secret IDs are not its to revoke: the
// portal's kill switch stops them with the person's token (an agent
// manager's) first, and hands the engine its receipts, so that one job
// holds the whole story. From the CLI, without the portal, the agents'
// part is two vault commands (the help says which).

const revokeJobPrefix = "revoke-jobs/"

// Outcomes of one item of a job.
const (
	outcomeRevoked      = "revoked"
	outcomeNotRevocable = "not_revocable"
	outcomeFailed       = "failed"
)

type revokeJob struct {
	ID            string       `json:"id"`
	Scope         string       `json:"scope"`
	Credential    string       `json:"credential,omitempty"`
	Agent         string       `json:"agent,omitempty"`
	StartedBy     string       `json:"started_by,omitempty"`
	IncludeGrants bool         `json:"include_grants"`
	State         string       `json:"state"` // running, done
	StartedAt     time.Time    `json:"started_at"`
	FinishedAt    time.Time    `json:"finished_at,omitzero"`
	Pending       []string     `json:"pending,omitempty"`
	Items         []revokeItem `json:"items"`
	Node          string       `json:"node"`
}

type revokeItem struct {
	Kind    string                 `json:"kind"`
	Name    string                 `json:"name"`
	Outcome string                 `json:"outcome"`
	Detail  string                 `json:"detail,omitempty"`
	Receipt map[string]interface{} `json:"receipt,omitempty"`
}

func pathRevokeAll(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "revoke-all$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "revoke", OperationSuffix: "all"},
			Fields: map[string]*framework.FieldSchema{
				"scope": {
					Type:          framework.TypeString,
					Description:   "What is revoked: org (every agent and OAuth grant of the org), agent (one agent) or credential (the grant of one credential). Example: scope=org",
					AllowedValues: []interface{}{"org", "agent", "credential"},
					Required:      true,
				},
				"credential": {
					Type:        framework.TypeString,
					Description: "The credential, for scope=credential. Example: credential=gmail",
				},
				"agent": {
					Type:        framework.TypeString,
					Description: "The agent, for scope=agent. Example: agent=billing",
				},
				"include_grants": {
					Type:        framework.TypeBool,
					Description: "Revoke the OAuth grants at their providers (and drop them). Needed for scope=credential. Example: include_grants=true",
				},
				"confirm": {
					Type:        framework.TypeString,
					Description: "Names the scope, to show this is meant: the org's name for scope=org, the agent's or the credential's for the others. Example: confirm=acme",
					Required:    true,
				},
				"agent_receipts": {
					Type:        framework.TypeString,
					Description: `The receipts of the agents stopped before this write (by the portal's kill switch), kept with the job: a JSON list of {"name", "outcome", "detail"}. Example: agent_receipts='[{"name":"billing","outcome":"revoked","detail":"entity disabled"}]'`,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                  b.pathRevokeAllWrite,
					ForwardPerformanceStandby: true,
					Summary:                   "Start the kill switch: revoke the org's (one agent's, one credential's) OAuth grants at their providers and keep the agents' receipts; answers the job's ID.",
				},
			},
			HelpSynopsis:    pathRevokeAllHelpSyn,
			HelpDescription: pathRevokeAllHelpDesc,
		},
		{
			Pattern:      "revoke-all/(?P<id>[0-9a-f]{16})$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationSuffix: "revoke-job"},
			Fields: map[string]*framework.FieldSchema{
				"id": {Type: framework.TypeString, Description: "The job's ID, as revoke-all answered it. Example: vault read orgs/acme/revoke-all/3f2a9c0d1e4b5a6f (the ID is in the path)", Required: true},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathRevokeJobRead, Summary: "Read a kill-switch job: its state and a receipt per item."},
			},
			HelpSynopsis:    pathRevokeAllHelpSyn,
			HelpDescription: pathRevokeAllHelpDesc,
		},
	}
}

func (b *backend) pathRevokeAllWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	org := orgOfMount(req.MountPoint)
	if org == "" {
		return nil, fmt.Errorf("the mount %q is not orgs/<org>/", req.MountPoint)
	}
	scope, cred, agent, confirm := d.Get("scope").(string), d.Get("credential").(string), d.Get("agent").(string), d.Get("confirm").(string)
	grants := d.Get("include_grants").(bool)
	target := org
	switch scope {
	case "org":
		if cred != "" || agent != "" {
			return nil, userErrorMsg("credential and agent are for scope=credential and scope=agent; scope=org takes all of the org")
		}
	case "agent":
		if !agentNamePattern.MatchString(agent) || cred != "" {
			return nil, userErrorMsg("scope=agent needs agent, the agent's name (and no credential)")
		}
		if grants {
			return nil, userErrorMsg("include_grants is for scope=org and scope=credential: an agent holds no grant of its own")
		}
		target = agent
	case "credential":
		if err := validateCredName(cred); err != nil || agent != "" {
			return nil, userErrorMsg("scope=credential needs credential, the credential's name (and no agent)")
		}
		if !grants {
			return nil, userErrorMsg("scope=credential revokes the credential's grant at its provider: include_grants=true is needed")
		}
		target = cred
	default:
		return nil, userErrorf("scope must be org, agent or credential, not %q", truncate(scope, 32))
	}
	if confirm != target {
		return nil, userErrorf("confirm must name the scope: confirm=%s (for scope=%s); nothing was revoked", target, scope)
	}
	agentItems, err := parseAgentReceipts(d.Get("agent_receipts").(string), scope, agent)
	if err != nil {
		return nil, err
	}
	if !grants && len(agentItems) == 0 {
		return nil, userErrorMsg("nothing to do: the engine revokes OAuth grants (include_grants=true); the agents' tokens and secret IDs are stopped by the portal's kill switch, or by vault write identity/entity/name/orgs-" + org + "-agent-<name> disabled=true and destroying the role's secret IDs (see vault path-help)")
	}
	names := []string{}
	switch {
	case !grants:
	case scope == "org":
		lines, err := b.index.Lines(ctx, req.Storage)
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			names = append(names, l.Name)
		}
	default:
		c, err := getCredential(ctx, req.Storage, cred)
		if err != nil {
			return nil, err
		}
		if c == nil {
			return nil, userErrorf("credential %q does not exist", cred)
		}
		zeroCredentialFile(c)
		names = append(names, cred)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	job := &revokeJob{ID: hex.EncodeToString(id[:]), Scope: scope, Credential: cred, Agent: agent, IncludeGrants: grants,
		State: "running", StartedAt: b.now().UTC(), StartedBy: req.DisplayName, Pending: names, Items: agentItems, Node: b.nodeID}
	if len(names) == 0 {
		job.State, job.FinishedAt = "done", job.StartedAt
	}
	if err := putRevokeJob(ctx, req.Storage, job); err != nil {
		return nil, err
	}
	b.logger.Warn("kill switch started", "job", job.ID, "scope", scope, "target", target, "credentials", len(names), "agents", len(agentItems))
	if len(names) > 0 {
		b.startRevokeJob(job.ID)
	}
	return &logical.Response{Data: map[string]interface{}{
		"job_id": job.ID, "state": job.State, "credentials": len(names), "agents": len(agentItems),
	}}, nil
}

// maxAgentReceipts bounds the receipts a kill switch may bring.
const maxAgentReceipts = 10000

// agentNamePattern is the portal's rule for agent names.
var agentNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,47}$`)

// parseAgentReceipts checks the receipts of the agents the portal stopped.
func parseAgentReceipts(raw, scope, agent string) ([]revokeItem, error) {
	items := []revokeItem{}
	if raw == "" {
		return items, nil
	}
	var in []struct {
		Name    string `json:"name"`
		Outcome string `json:"outcome"`
		Detail  string `json:"detail"`
	}
	if err := json.Unmarshal([]byte(raw), &in); err != nil {
		return nil, userErrorMsg(`agent_receipts must be a JSON list of {"name", "outcome", "detail"}`)
	}
	if len(in) > maxAgentReceipts {
		return nil, userErrorf("agent_receipts holds %d receipts; at most %d", len(in), maxAgentReceipts)
	}
	for i, r := range in {
		switch {
		case !agentNamePattern.MatchString(r.Name):
			return nil, userErrorf("agent_receipts[%d]: %q is not an agent name", i, truncate(r.Name, 64))
		case scope == "agent" && r.Name != agent:
			return nil, userErrorf("agent_receipts[%d] is agent %s; scope=agent is agent %s", i, r.Name, agent)
		case r.Outcome != outcomeRevoked && r.Outcome != outcomeNotRevocable && r.Outcome != outcomeFailed:
			return nil, userErrorf("agent_receipts[%d]: outcome must be revoked, not_revocable or failed", i)
		case len(r.Detail) > 512:
			return nil, userErrorf("agent_receipts[%d]: detail is longer than 512 bytes", i)
		}
		items = append(items, revokeItem{Kind: "agent", Name: r.Name, Outcome: r.Outcome, Detail: r.Detail})
	}
	return items, nil
}

func putRevokeJob(ctx context.Context, s logical.Storage, j *revokeJob) error {
	entry, err := logical.StorageEntryJSON(revokeJobPrefix+j.ID, j)
	if err != nil {
		return err
	}
	return s.Put(ctx, entry)
}

func (b *backend) pathRevokeJobRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	j, err := store.ReadJSON[revokeJob](ctx, req.Storage, revokeJobPrefix+d.Get("id").(string), "revoke job")
	if err != nil || j == nil {
		return nil, err
	}
	counts := map[string]int{}
	items := make([]interface{}, 0, len(j.Items))
	for _, it := range j.Items {
		counts[it.Outcome]++
		m := map[string]interface{}{"kind": it.Kind, "name": it.Name, "outcome": it.Outcome, "detail": it.Detail}
		if it.Receipt != nil {
			m["receipt"] = it.Receipt
		}
		items = append(items, m)
	}
	data := map[string]interface{}{
		"job_id": j.ID, "scope": j.Scope, "credential": j.Credential, "agent": j.Agent, "include_grants": j.IncludeGrants,
		"state": j.State, "started_at": j.StartedAt.Format(time.RFC3339), "started_by": j.StartedBy, "pending": len(j.Pending),
		"revoked": counts[outcomeRevoked], "not_revocable": counts[outcomeNotRevocable], "failed": counts[outcomeFailed],
		"items": items,
	}
	if !j.FinishedAt.IsZero() {
		data["finished_at"] = j.FinishedAt.Format(time.RFC3339)
	}
	return &logical.Response{Data: data}, nil
}

// startRevokeJob runs job id in the background; the mount's storage
// outlives the request that started it.
func (b *backend) startRevokeJob(id string) {
	s := b.storage
	if s == nil {
		return // unit tests run jobs with runRevokeJob
	}
	if _, running := b.revokeJobs.LoadOrStore(id, true); running {
		return
	}
	go func() {
		defer b.revokeJobs.Delete(id)
		if err := b.runRevokeJob(context.Background(), s, id); err != nil {
			b.logger.Error("kill switch", "job", id, "error", err)
		}
	}()
}

// resumeRevokeJobs takes up the jobs left running by a node that stopped
// (a restart, a change of leader): the periodic function's part.
func (b *backend) resumeRevokeJobs(ctx context.Context, s logical.Storage) error {
	ids, err := s.List(ctx, revokeJobPrefix)
	if err != nil {
		return err
	}
	for _, id := range ids {
		j, err := store.ReadJSON[revokeJob](ctx, s, revokeJobPrefix+id, "revoke job")
		if err != nil {
			return err
		}
		if j != nil && j.State == "running" && j.Node != b.nodeID {
			b.startRevokeJob(id)
		}
	}
	return nil
}

// runRevokeJob revokes each pending credential's grant, storing the job's
// progress after each, so a job taken up elsewhere does not start over.
func (b *backend) runRevokeJob(ctx context.Context, s logical.Storage, id string) error {
	j, err := store.ReadJSON[revokeJob](ctx, s, revokeJobPrefix+id, "revoke job")
	if err != nil || j == nil {
		return err
	}
	j.Node = b.nodeID
	for len(j.Pending) > 0 {
		name := j.Pending[0]
		j.Items = append(j.Items, b.revokeOne(ctx, s, name))
		j.Pending = j.Pending[1:]
		if err := putRevokeJob(ctx, s, j); err != nil {
			return err
		}
	}
	j.State, j.FinishedAt = "done", b.now().UTC()
	b.logger.Warn("kill switch done", "job", j.ID, "items", len(j.Items))
	return putRevokeJob(ctx, s, j)
}

// revokeOne is one credential's receipt.
func (b *backend) revokeOne(ctx context.Context, s logical.Storage, name string) revokeItem {
	item := revokeItem{Kind: "credential", Name: name}
	c, err := getCredential(ctx, s, name)
	switch {
	case err != nil:
		item.Outcome, item.Detail = outcomeFailed, "reading the credential failed"
		return item
	case c == nil:
		item.Outcome, item.Detail = outcomeNotRevocable, "deleted meanwhile"
		return item
	}
	zeroCredentialFile(c)
	if c.Type != typeOAuth2 {
		item.Outcome = outcomeNotRevocable
		item.Detail = fmt.Sprintf("%s is revoked at its service, not by the engine: rotate it there, then store the new one or delete it", typeLabel(c.Type))
		return item
	}
	if c.ClientCredentials || !c.OAuth.Connected() {
		item.Outcome, item.Detail = outcomeNotRevocable, "it holds no grant"
		return item
	}
	receipt, err := b.disconnect(ctx, s, name)
	if err != nil {
		item.Outcome, item.Detail = outcomeFailed, truncate(err.Error(), 256)
		return item
	}
	item.Receipt = receipt
	notRevoked, _ := receipt["not_revoked"].([]string)
	reason, _ := receipt["reason"].(string)
	switch {
	case len(notRevoked) == 0:
		item.Outcome, item.Detail = outcomeRevoked, "revoked at the provider and dropped"
	case receipt["method"] == revokeNone:
		item.Outcome, item.Detail = outcomeNotRevocable, "the provider has no revocation; the tokens were dropped: "+reason
	default:
		item.Outcome, item.Detail = outcomeFailed, "dropped, but the provider did not revoke all of it: "+reason
	}
	return item
}

func typeLabel(t string) string {
	switch t {
	case typeAPIKey:
		return "an API key"
	case typePassword:
		return "a password"
	case typeFile:
		return "a file"
	}
	return "a " + t
}

const pathRevokeAllHelpSyn = "The kill switch: revoke the org's OAuth grants at their providers, with a receipt per item."

const pathRevokeAllHelpDesc = `
With include_grants=true, revokes every OAuth grant of the org (scope=org),
or the grant of one credential (scope=credential), at its provider and
drops it; the credential is then disconnected. confirm names the scope (the
org's name, the agent's or the credential's), or nothing is done. It runs as
a job: the write answers the job's ID at once; reading revoke-all/<id> gives
its state and a receipt per item: revoked, not_revocable (an API key, a
password or a file is revoked at its service; a provider without
revocation), or failed, with the provider's answer. A job left running by a
node that stopped is taken up by the active node.

The engine holds no Vault token, so the agents' tokens and secret IDs are
not its to revoke. The portal's kill switch (Kill switch, in the org's
menu) stops them with the person's token, which needs the org's agents
policy, and brings their receipts here (agent_receipts). Without the
portal, an agent is stopped by disabling its entity, which makes Vault
refuse every token it holds, and destroying its secret IDs:

  vault write identity/entity/name/orgs-acme-agent-billing disabled=true
  vault list auth/approle/role/orgs-acme-agent-billing/secret-id
  vault write auth/approle/role/orgs-acme-agent-billing/secret-id-accessor/destroy secret_id_accessor=<accessor>

Examples:

  vault write orgs/acme/revoke-all scope=org include_grants=true confirm=acme
  vault write orgs/acme/revoke-all scope=credential credential=gmail include_grants=true confirm=gmail
  vault read orgs/acme/revoke-all/<job_id>
`
