package credentials

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathTrail(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "trail-report$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "report", OperationSuffix: "trail"},
			Fields: map[string]*framework.FieldSchema{
				"lines": {
					Type:        framework.TypeString,
					Description: `The calls, a JSON list of {"at", "ingress", "credential", "method", "path", "tool", "status", "bytes", "duration_ms"}. Example: lines='[{"at":"2026-12-06T10:00:00Z","ingress":"edge","credential":"stripe","method":"GET","path":"/v1/balance","status":200,"bytes":912,"duration_ms":41.2}]'`,
					Required:    true,
				},
				"mac": {
					Type:        framework.TypeString,
					Description: "HMAC-SHA256 of lines, hex, under the trail key the engine gave the edge in the agent's sealed injection. Example: mac=9f2c04d1e8b7a6c5 (64 hex digits in all)",
					Required:    true,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                  b.pathTrailReport,
					ForwardPerformanceStandby: true,
					Summary:                   "The portal's edge reports the calls it made for the calling agent, signed with the agent's trail key.",
				},
			},
			HelpSynopsis: "The edge's report of the calls it made for an agent, for the agent's trail.",
			HelpDescription: `The portal's edge streams an agent's calls without the engine, so it
reports them here, batched, with the agent's own token. A report is signed
(mac) with a key the engine put in the agent's sealed injection, which only
the edge can open: an agent cannot write lines into its own trail. Lines
hold no query, header or body.`,
		},
		{
			Pattern:      "agents/" + framework.GenericNameRegex("agent") + "/trail$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationSuffix: "agent-trail"},
			Fields: map[string]*framework.FieldSchema{
				"agent": {Type: framework.TypeString, Description: "The agent's name. Example: vault read orgs/acme/agents/billing/trail (the name is in the path)", Required: true},
				"limit": {Type: framework.TypeInt, Description: "At most this many calls, newest first (default and most: 1000). Example: limit=50", Default: maxTrailLines},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathTrailRead, Summary: "Read an agent's recent calls, newest first."},
			},
			HelpSynopsis: "An agent's trail: its recent calls.",
			HelpDescription: `The agent's last 1000 calls through every ingress (the Vault path, the
portal's edge, its proxy and MCP server, mail), newest first: when, the
ingress, the credential, the method and path (no query) or the tool, the
status, the bytes answered and the duration. Nothing in it is secret.

  vault read orgs/acme/agents/billing/trail
  vault read -format=json orgs/acme/agents/billing/trail limit=50`,
		},
	}
}

func (b *backend) pathTrailReport(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	agent, key, err := b.edgeReporter(ctx, req, "trail lines are reported with an agent's own token")
	if err != nil {
		return nil, err
	}
	lines, err := parseTrailReport(d.Get("lines").(string), d.Get("mac").(string), key, b.now())
	if err != nil {
		return nil, err
	}
	b.trail.record(agent, lines...)
	return &logical.Response{Data: map[string]interface{}{"recorded": len(lines)}}, nil
}

func (b *backend) pathTrailRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	agent := d.Get("agent").(string)
	if !agentNamePattern.MatchString(agent) {
		return nil, userErrorf("%q is not an agent name", truncate(agent, 64))
	}
	limit := d.Get("limit").(int)
	if limit <= 0 || limit > maxTrailLines {
		return nil, userErrorf("limit must be 1 to %d", maxTrailLines)
	}
	lines, err := b.trailRead(ctx, req.Storage, agent, limit)
	if err != nil {
		return nil, err
	}
	out := make([]interface{}, 0, len(lines))
	for _, l := range lines {
		out = append(out, trailLineMap(l))
	}
	return &logical.Response{Data: map[string]interface{}{"agent": agent, "calls": out, "kept": maxTrailLines}}, nil
}
