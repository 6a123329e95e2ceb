package credentials

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/contract"
)

func pathApprovals(b *backend) []*framework.Path {
	idField := map[string]*framework.FieldSchema{
		"id": {Type: framework.TypeString, Description: "The approval's ID, as the held call was told it. Example: vault read orgs/acme/approvals/4f1c2b3a4d5e6f708192a3b4 (the ID is in the path)", Required: true},
	}
	return []*framework.Path{
		{
			Pattern:      "approval-rules/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationSuffix: "approval-rules"},
			Fields: map[string]*framework.FieldSchema{
				"name": {Type: framework.TypeString, Description: "The credential. Example: vault write orgs/acme/approval-rules/stripe-live rules=... (the name is in the path)", Required: true},
				"rules": {
					Type:        framework.TypeCommaStringSlice,
					Description: "The calls that need a person's approval: a method (or *) and a path rule, matched segment by segment as agents' rules are ('+' one segment, a last '*' anything below; never the query), or TOOL and a remote MCP tool's name. Example: rules='POST /v1/refunds,DELETE /v1/customers/+'",
					Required:    true,
				},
				"agents": {
					Type:        framework.TypeCommaStringSlice,
					Description: "When set, the rules hold for these agents only; empty: for every agent. Example: agents=billing,support",
				},
				"ttl": {
					Type:        framework.TypeDurationSecond,
					Description: "How long a held call waits for a decision, and an approval then stays usable (once): 1m to 24h, default 15m. Example: ttl=30m",
				},
			},
			ExistenceCheck: func(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
				r, err := getApprovalRules(ctx, req.Storage, d.Get("name").(string))
				return r != nil, err
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{Callback: b.pathApprovalRulesWrite, Summary: "Set the calls of a credential that need a person's approval."},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathApprovalRulesWrite, Summary: "Change them."},
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathApprovalRulesRead, Summary: "Read them."},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathApprovalRulesDelete, Summary: "Remove them: no call of the credential needs approval."},
			},
			HelpSynopsis:    "The calls of a credential that need a person's approval.",
			HelpDescription: approvalsHelp,
		},
		{
			Pattern:      "approvals/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationSuffix: "approvals"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathApprovalsList, Summary: "List the org's approvals, waiting ones first, newest first."},
			},
			HelpSynopsis:    "The org's approvals: calls held for a person's decision.",
			HelpDescription: approvalsHelp,
		},
		{
			Pattern:      "approvals/request$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "request", OperationSuffix: "approval"},
			Fields: map[string]*framework.FieldSchema{
				"credential": {Type: framework.TypeString, Description: "The credential the call uses. Example: credential=stripe", Required: true},
				"method":     {Type: framework.TypeString, Description: "The call's method, or TOOL. Example: method=POST", Required: true},
				"path":       {Type: framework.TypeString, Description: "The call's decoded path, or the tool's name. Example: path=/v1/refunds", Required: true},
				"query":      {Type: framework.TypeString, Description: "The call's query, as sent. Example: query=expand=charge"},
				"hash":       {Type: framework.TypeString, Description: "contract.ApprovalHash of the call: SHA-256 of method, path, canonical query and body, hex. Example: hash=9b74c9897bac770ffc029102a200c5de6a1f6d4a1f0e8c0b7d2c5e6f8a9b0c1d", Required: true},
				"preview":    {Type: framework.TypeString, Description: "The start of the body (at most 2048 bytes of text), for the person. Example: preview={\"charge\":\"ch_1\"}"},
				"body_bytes": {Type: framework.TypeInt, Description: "The body's size. Example: body_bytes=19"},
				"mac":        {Type: framework.TypeString, Description: "HMAC-SHA256 of the fields above under the agent's report key from its sealed injection, hex. Example: mac=3c9f04d1e8b7a6c5 (64 hex digits in all)", Required: true},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathApprovalRequest, ForwardPerformanceStandby: true,
					Summary: "The portal's edge holds an agent's call for approval (signed with the agent's report key)."},
			},
			HelpSynopsis:    "The edge holds an agent's call for a person's approval.",
			HelpDescription: approvalsHelp,
		},
		{
			Pattern:      "approvals/match$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "match", OperationSuffix: "approval"},
			Fields: map[string]*framework.FieldSchema{
				"credential": {Type: framework.TypeString, Description: "The credential of the call. Example: credential=tracker", Required: true},
				"hash":       {Type: framework.TypeString, Description: "The call's contract.ApprovalHash, hex. Example: hash=9b74c9897bac770ffc029102a200c5de6a1f6d4a1f0e8c0b7d2c5e6f8a9b0c1d", Required: true},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathApprovalMatch, ForwardPerformanceStandby: true,
					Summary: "For calls that cannot carry an approval's ID (MCP tool calls): spend this agent's approved approval of the same call, or name the one waiting."},
			},
			HelpSynopsis:    "The MCP server's approval of a repeated tool call.",
			HelpDescription: approvalsHelp,
		},
		{
			Pattern:      "approvals/(?P<id>[0-9a-f]{24})$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationSuffix: "approval"},
			Fields:       idField,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathApprovalRead, Summary: "Read an approval: the call, its state, who decided."},
			},
			HelpSynopsis:    "One approval: a held call and its decision.",
			HelpDescription: approvalsHelp,
		},
		{
			Pattern:      "approvals/(?P<id>[0-9a-f]{24})/(?P<decision>approve|deny)$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "decide", OperationSuffix: "approval"},
			Fields: mergeFields(idField, map[string]*framework.FieldSchema{
				"decision": {Type: framework.TypeString, Description: "approve or deny (in the path). Example: vault write -f orgs/acme/approvals/<id>/approve", Required: true},
				"reason":   {Type: framework.TypeString, Description: "Why, told to the agent with a denial (at most 256 bytes). Example: reason=\"refunds over 100 EUR go through finance\""},
			}),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathApprovalDecide, ForwardPerformanceStandby: true, Summary: "Approve or deny a held call; the decider is recorded."},
			},
			HelpSynopsis:    "Approve or deny a held call.",
			HelpDescription: approvalsHelp,
		},
		{
			Pattern:      "approvals/(?P<id>[0-9a-f]{24})/use$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "use", OperationSuffix: "approval"},
			Fields: mergeFields(idField, map[string]*framework.FieldSchema{
				"credential": {Type: framework.TypeString, Description: "The credential of the call. Example: credential=stripe", Required: true},
				"hash":       {Type: framework.TypeString, Description: "The call's contract.ApprovalHash, hex. Example: hash=9b74c9897bac770ffc029102a200c5de6a1f6d4a1f0e8c0b7d2c5e6f8a9b0c1d", Required: true},
			}),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathApprovalUse, ForwardPerformanceStandby: true, Summary: "The edge spends an approval on the call it approves: once, for the same arguments."},
			},
			HelpSynopsis:    "The edge spends an approval on its call.",
			HelpDescription: approvalsHelp,
		},
	}
}

func (b *backend) pathApprovalRulesWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	name := d.Get("name").(string)
	if err := validateCredName(name); err != nil {
		return nil, err
	}
	if c, err := getCredential(ctx, req.Storage, name); err != nil {
		return nil, err
	} else if c == nil {
		return nil, userErrorf("credential %q does not exist", name)
	} else {
		zeroCredentialFile(c)
	}
	r := &approvalRules{TTL: defaultApprovalTTL}
	for _, s := range d.Get("rules").([]string) {
		rule, err := contract.ParseApprovalRule(s)
		if err != nil {
			return nil, userErrorf("rules: %v", err)
		}
		r.Rules = append(r.Rules, rule.String())
	}
	if len(r.Rules) == 0 || len(r.Rules) > 64 {
		return nil, userErrorMsg("rules: 1 to 64 rules (delete the approval rules to need none)")
	}
	for _, a := range d.Get("agents").([]string) {
		if !agentNamePattern.MatchString(a) {
			return nil, userErrorf("agents: %q is not an agent name", truncate(a, 64))
		}
		r.Agents = append(r.Agents, a)
	}
	if v, ok := d.GetOk("ttl"); ok {
		r.TTL = time.Duration(v.(int)) * time.Second
	}
	if r.TTL < time.Minute || r.TTL > 24*time.Hour {
		return nil, userErrorMsg("ttl must be 1m to 24h")
	}
	entry, err := logical.StorageEntryJSON(approvalRulesPrefix+name, r)
	if err != nil {
		return nil, err
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, err
	}
	b.logger.Info("approval rules set", "name", name, "rules", len(r.Rules))
	return nil, nil
}

func (b *backend) pathApprovalRulesRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	r, err := getApprovalRules(ctx, req.Storage, d.Get("name").(string))
	if err != nil || r == nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{"rules": r.Rules, "agents": r.Agents, "ttl": int(r.TTL.Seconds())}}, nil
}

func (b *backend) pathApprovalRulesDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	return nil, req.Storage.Delete(ctx, approvalRulesPrefix+d.Get("name").(string))
}

func (b *backend) pathApprovalsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ids, err := req.Storage.List(ctx, approvalPrefix)
	if err != nil {
		return nil, err
	}
	now := b.now()
	var all []*approval
	for _, id := range ids {
		a, err := getApproval(ctx, req.Storage, id)
		if err != nil {
			return nil, err
		}
		if a != nil {
			all = append(all, a)
		}
	}
	sort.Slice(all, func(i, j int) bool {
		pi, pj := all[i].state(now) == approvalPending, all[j].state(now) == approvalPending
		if pi != pj {
			return pi
		}
		return all[i].CreatedAt.After(all[j].CreatedAt)
	})
	keys := make([]string, 0, len(all))
	info := map[string]interface{}{}
	for _, a := range all {
		keys = append(keys, a.ID)
		r := a.response(now)
		delete(r, "preview")
		info[a.ID] = r
	}
	return logical.ListResponseWithInfo(keys, info), nil
}

func (b *backend) pathApprovalRequest(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	agent, key, err := b.edgeReporter(ctx, req, "approvals are requested by the portal's edge with an agent's token")
	if err != nil {
		return nil, err
	}
	cred, method, path, query := d.Get("credential").(string), d.Get("method").(string), d.Get("path").(string), d.Get("query").(string)
	hash, preview, size := d.Get("hash").(string), d.Get("preview").(string), d.Get("body_bytes").(int)
	if err := checkReportMAC(key, d.Get("mac").(string), "the request's mac does not match: approvals are requested by the portal's edge",
		contract.ReportApproval, cred, method, path, query, hash, preview, strconv.Itoa(size)); err != nil {
		return nil, err
	}
	if len(hash) != 64 || len(preview) > contract.MaxApprovalPreview || size < 0 || size > contract.MaxApprovalBody || len(path) > contract.MaxTrailPath || len(query) > 2048 {
		return nil, userErrorMsg("hash is 64 hex digits; preview at most 2048 bytes; path at most 1024 and query 2048")
	}
	c, err := b.usableCredential(ctx, req, cred)
	if err != nil {
		return nil, err
	}
	zeroCredentialFile(c)
	rules, err := getApprovalRules(ctx, req.Storage, cred)
	if err != nil {
		return nil, err
	}
	if !contract.AnyApprovalRuleHolds(rules.forAgent(agent), method, path) {
		return nil, userErrorf("no approval rule of credential %s holds for %s %s", cred, method, truncate(path, 64))
	}
	a, err := b.requestApproval(ctx, req, heldCall{agent: agent, cred: cred, ingress: "edge", method: method, path: path,
		rawQuery: query, hash: hash, preview: preview, bodyBytes: size}, rules.TTL)
	if err != nil {
		return nil, err
	}
	cfg, err := b.brokerConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{
		"approval_id": a.ID, "expires_at": a.ExpiresAt.Format(time.RFC3339), "approval_url": approvalURL(cfg, req.MountPoint, a.ID),
	}}, nil
}

func (b *backend) pathApprovalRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	a, err := getApproval(ctx, req.Storage, d.Get("id").(string))
	if err != nil || a == nil {
		return nil, err
	}
	// An agent reads its own approvals only (to wait for a decision).
	if agent := b.agentOf(req); agent != "" && agent != a.Agent {
		return nil, nil
	}
	return &logical.Response{Data: a.response(b.now())}, nil
}

func (b *backend) pathApprovalDecide(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	if b.agentOf(req) != "" {
		return nil, &userError{Status: http.StatusForbidden, Permanent: true, Msg: "an agent cannot decide approvals: a person does"}
	}
	id, decision, reason := d.Get("id").(string), d.Get("decision").(string), d.Get("reason").(string)
	if len(reason) > 256 {
		return nil, userErrorMsg("reason is at most 256 bytes")
	}
	lock := b.credLock(approvalPrefix + id)
	lock.Lock()
	defer lock.Unlock()
	a, err := getApproval(ctx, req.Storage, id)
	if err != nil {
		return nil, err
	}
	if a == nil {
		return nil, logical.CodedError(http.StatusNotFound, "approval "+id+" does not exist")
	}
	now := b.now().UTC()
	if st := a.state(now); st != approvalPending {
		return nil, userErrorf("approval %s is %s already%s", id, st, decidedBy(a))
	}
	a.State, a.DecidedBy, a.DecidedAt, a.Reason = approvalApproved, b.callerOf(req), now, reason
	if decision == "deny" {
		a.State = approvalDenied
	}
	if err := putApproval(ctx, req.Storage, a); err != nil {
		return nil, err
	}
	b.logger.Info("approval decided", "approval", id, "state", a.State, "by", a.DecidedBy)
	return &logical.Response{Data: a.response(now)}, nil
}

func mergeFields(a, b map[string]*framework.FieldSchema) map[string]*framework.FieldSchema {
	out := map[string]*framework.FieldSchema{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func decidedBy(a *approval) string {
	if a.DecidedBy == "" {
		return ""
	}
	return fmt.Sprintf(" (by %s)", a.DecidedBy)
}

func (b *backend) pathApprovalUse(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	agent := b.agentOf(req)
	if agent == "" {
		return nil, userErrorMsg("approvals are used by the agent they were asked for")
	}
	if err := b.useApproval(ctx, req.Storage, d.Get("id").(string), agent, d.Get("credential").(string), d.Get("hash").(string)); err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{"used": true}}, nil
}

const approvalsHelp = `
Approval rules (approval-rules/<credential>) name the calls of a
credential that need a person's approval before an agent makes them: a
method and a path rule ("POST /v1/refunds", "DELETE /v1/customers/+",
"* /v1/payouts/*"), matched segment by segment like agents' rules, or
"TOOL <name>" for a remote MCP tool; optionally for some agents only.

A matching call is held, on the Vault path and on the portal's edge alike:
the engine stores an approval bound to the call (SHA-256 of method, path,
canonical query and body), tells the org's webhooks (approval.requested),
and the call is answered with the approval's ID and, when the org's
redirect_url names the portal, its page there. A person approves or denies
it in the portal (Approvals) or here; who decided is recorded. The agent
then sends the same call again with the ID (the edge: header
X-Credentials-Approval; the Vault path: approval_id=), and it goes
through once. Other arguments, a second use, a denial or an approval past
its ttl are refused, saying which. At the edge an agent may instead wait
for the decision (header Prefer: wait=<seconds>, at most 120).

  vault write orgs/acme/approval-rules/stripe-live rules='POST /v1/refunds,DELETE /v1/customers/+' ttl=30m
  vault list -detailed orgs/acme/approvals
  vault write -f orgs/acme/approvals/<id>/approve
  vault write orgs/acme/approvals/<id>/deny reason="refunds over 100 EUR go through finance"
`

// pathApprovalMatch finds this agent's approval of the same call: an
// approved one is spent (state used), a waiting one is named (pending),
// else none.
func (b *backend) pathApprovalMatch(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	agent := b.agentOf(req)
	if agent == "" {
		return nil, userErrorMsg("approvals are matched for an agent's calls")
	}
	cred, hash := d.Get("credential").(string), d.Get("hash").(string)
	a, err := approvalOfCall(ctx, req.Storage, agent, cred, hash)
	if err != nil {
		return nil, err
	}
	if a != nil {
		switch a.state(b.now()) {
		case approvalApproved:
			if err := b.useApproval(ctx, req.Storage, a.ID, agent, cred, hash); err != nil {
				return nil, err
			}
			return &logical.Response{Data: map[string]interface{}{"state": approvalUsed, "approval_id": a.ID}}, nil
		case approvalPending:
			cfg, err := b.brokerConfig(ctx, req.Storage)
			if err != nil {
				return nil, err
			}
			return &logical.Response{Data: map[string]interface{}{"state": approvalPending, "approval_id": a.ID, "approval_url": approvalURL(cfg, req.MountPoint, a.ID)}}, nil
		}
	}
	return &logical.Response{Data: map[string]interface{}{"state": "none"}}, nil
}
