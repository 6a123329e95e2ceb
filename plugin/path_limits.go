package credentials

import (
	"context"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/usage"
	"github.com/clankteam/credentials/plugin/store"
)

func pathLimits(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "limits/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationSuffix: "limits"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathLimitsList, Summary: "List the org's rate limits and budgets with their use now."},
			},
			HelpSynopsis:    "The org's rate limits and budgets.",
			HelpDescription: limitsHelp,
		},
		{
			Pattern:      "limits/lease$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "lease", OperationSuffix: "calls"},
			Fields: map[string]*framework.FieldSchema{
				"credential": {Type: framework.TypeString, Description: "The credential the calls use. Example: credential=openai", Required: true},
				"want":       {Type: framework.TypeInt, Description: "How many calls the edge would like to make from this lease (1 to 1000). Example: want=8", Default: 1},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathLimitLease, ForwardPerformanceStandby: true,
					Summary: "The portal's edge takes a few calls of the agent's limits at a time (with the agent's token); refused with 429 past a limit."},
			},
			HelpSynopsis:    "The edge's lease of calls under the org's limits.",
			HelpDescription: limitsHelp,
		},
		{
			Pattern:      "limits/spend$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "report", OperationSuffix: "spend"},
			Fields: map[string]*framework.FieldSchema{
				"credential":    {Type: framework.TypeString, Description: "The credential the call used. Example: credential=openai", Required: true},
				"model":         {Type: framework.TypeString, Description: "The model the answer named. Example: model=gpt-4o-mini", Required: true},
				"input_tokens":  {Type: framework.TypeInt, Description: "Input tokens the answer reported. Example: input_tokens=1200"},
				"output_tokens": {Type: framework.TypeInt, Description: "Output tokens the answer reported. Example: output_tokens=350"},
				"mac":           {Type: framework.TypeString, Description: "HMAC-SHA256 of the fields above under the agent's report key, hex. Example: mac=5d2e04d1e8b7a6c5 (64 hex digits in all)", Required: true},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathSpendReport, ForwardPerformanceStandby: true,
					Summary: "The portal's edge reports the usage an answer reported, for spend limits (signed with the agent's report key)."},
			},
			HelpSynopsis:    "The edge's report of an answer's usage, for spend limits.",
			HelpDescription: limitsHelp,
		},
		{
			Pattern:      "limits/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationSuffix: "limit"},
			Fields: map[string]*framework.FieldSchema{
				"name":       {Type: framework.TypeString, Description: "The limit's name. Example: vault write orgs/acme/limits/openai-daily ... (the name is in the path)", Required: true},
				"agent":      {Type: framework.TypeString, Description: "Whose calls: an agent's name, * for each agent on its own, or empty for every caller together. Example: agent=*"},
				"credential": {Type: framework.TypeString, Description: "Which credential's calls; empty: every credential's. Example: credential=openai"},
				"calls":      {Type: framework.TypeInt, Description: "At most this many calls a period (a rate limit, or a budget of calls for any service). Example: calls=600"},
				"usd":        {Type: framework.TypeFloat, Description: "At most this spend a period, in US dollars, from the usage LLM services report in their answers, priced by the catalog's table. Example: usd=25"},
				"period": {Type: framework.TypeString, Description: "second, minute, hour, day, week (from Monday) or month, in UTC. Example: period=day",
					AllowedValues: []interface{}{"second", "minute", "hour", "day", "week", "month"}, Required: true},
			},
			ExistenceCheck: func(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
				e, err := req.Storage.Get(ctx, limitPrefix+d.Get("name").(string))
				return e != nil, err
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{Callback: b.pathLimitWrite, Summary: "Add a rate limit or budget."},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathLimitWrite, Summary: "Change it (its use so far stays)."},
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathLimitRead, Summary: "Read it and its use now."},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathLimitDelete, Summary: "Remove it."},
			},
			HelpSynopsis:    "A rate limit or budget of the org's calls.",
			HelpDescription: limitsHelp,
		},
	}
}

func (b *backend) pathLimitWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	l := &limitSpec{Name: d.Get("name").(string), Agent: d.Get("agent").(string), Credential: d.Get("credential").(string),
		Period: d.Get("period").(string)}
	if err := validateCredName(l.Name); err != nil {
		return nil, userErrorf("the limit's name: %v", err)
	}
	if l.Name == "lease" || l.Name == "spend" {
		return nil, userErrorf("%s is the edge's path: name the limit otherwise", l.Name)
	}
	if l.Agent != "" && l.Agent != "*" && !agentNamePattern.MatchString(l.Agent) {
		return nil, userErrorf("agent must be an agent's name, * or empty, not %q", truncate(l.Agent, 64))
	}
	if l.Credential != "" {
		if err := validateCredName(l.Credential); err != nil {
			return nil, userErrorf("credential: %v", err)
		}
	}
	if !slices.Contains(limitPeriods, l.Period) {
		return nil, userErrorf("period must be one of %s", strings.Join(limitPeriods, ", "))
	}
	calls, usd := int64(d.Get("calls").(int)), d.Get("usd").(float64)
	switch {
	case calls < 0 || usd < 0 || math.IsNaN(usd) || math.IsInf(usd, 0):
		return nil, userErrorMsg("calls and usd are not negative")
	case (calls > 0) == (usd > 0):
		return nil, userErrorMsg("a limit is of calls or of usd: give one of them")
	case usd > 0 && !l.persistent():
		return nil, userErrorMsg("a spend limit is per hour, day, week or month")
	}
	l.Calls, l.USD = calls, usd
	specs, err := b.limitSpecs(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if len(specs) >= maxLimits && !slices.ContainsFunc(specs, func(s *limitSpec) bool { return s.Name == l.Name }) {
		return nil, userErrorf("an org has at most %d limits", maxLimits)
	}
	entry, err := logical.StorageEntryJSON(limitPrefix+l.Name, l)
	if err != nil {
		return nil, err
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, err
	}
	b.forgetLimits()
	b.logger.Info("limit set", "limit", l.Name, "period", l.Period)
	return nil, nil
}

func (b *backend) limitResponse(ctx context.Context, s logical.Storage, l *limitSpec) (map[string]interface{}, error) {
	use, err := b.limitStatus(ctx, s, l)
	if err != nil {
		return nil, err
	}
	return map[string]interface{}{"agent": l.Agent, "credential": l.Credential, "calls": l.Calls, "usd": l.USD,
		"period": l.Period, "use": use}, nil
}

func (b *backend) pathLimitRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	l, err := store.ReadJSON[limitSpec](ctx, req.Storage, limitPrefix+d.Get("name").(string), "limit")
	if err != nil || l == nil {
		return nil, err
	}
	data, err := b.limitResponse(ctx, req.Storage, l)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathLimitDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := req.Storage.Delete(ctx, limitPrefix+name); err != nil {
		return nil, err
	}
	b.forgetLimits()
	return nil, nil
}

func (b *backend) pathLimitsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	specs, err := b.limitSpecs(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	keys := []string{}
	info := map[string]interface{}{}
	for _, l := range specs {
		data, err := b.limitResponse(ctx, req.Storage, l)
		if err != nil {
			return nil, err
		}
		keys = append(keys, l.Name)
		info[l.Name] = data
	}
	return logical.ListResponseWithInfo(keys, info), nil
}

func (b *backend) pathLimitLease(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	cred, want := d.Get("credential").(string), d.Get("want").(int)
	if err := validateCredName(cred); err != nil {
		return nil, err
	}
	if want < 1 || want > 1000 {
		return nil, userErrorMsg("want is 1 to 1000")
	}
	granted, err := b.takeCalls(ctx, req.Storage, b.requesterOf(req, b.agentOf(req)), cred, int64(want))
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{"granted": granted}}, nil
}

const limitsHelp = `
Rate limits and budgets, one mechanism: a limit caps the calls (calls=) or
the spend in US dollars (usd=, from the usage OpenAI- and Anthropic-style
answers report, priced by the catalog's table) of one agent (agent=billing),
of each agent on its own (agent=*), or of every caller together (no agent),
on one credential or all of them, per second, minute, hour, day, week or
month (UTC). Every way in takes from the same counters in the engine: the
Vault path, mail, and the portal's edge, proxy and MCP server, which lease a
few calls at a time. A call past a limit is refused before any service sees
it: 429, naming the limit, with when to retry (Retry-After at the edge). A
limit at 80% warns (the engine's log, and its use's state: warning).
Counters of an hour or longer are stored and survive restarts and leader
changes; shorter ones are kept in memory.

  vault write orgs/acme/limits/per-agent-rate agent=* calls=60 period=minute
  vault write orgs/acme/limits/openai-daily credential=openai usd=25 period=day
  vault list -detailed orgs/acme/limits
  vault read orgs/acme/limits/openai-daily
`

func (b *backend) pathSpendReport(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	agent, key, err := b.edgeReporter(ctx, req, "spend is reported by the portal's edge with an agent's token")
	if err != nil {
		return nil, err
	}
	cred, model := d.Get("credential").(string), d.Get("model").(string)
	in, out := d.Get("input_tokens").(int), d.Get("output_tokens").(int)
	if err := checkReportMAC(key, d.Get("mac").(string), "the report's mac does not match: spend is reported by the portal's edge",
		contract.ReportSpend, cred, model, strconv.Itoa(in), strconv.Itoa(out)); err != nil {
		return nil, err
	}
	if in < 0 || out < 0 || in > 1<<40 || out > 1<<40 || len(model) > 128 {
		return nil, userErrorMsg("tokens are not negative; model is at most 128 bytes")
	}
	c, err := getCredential(ctx, req.Storage, cred)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, userErrorf("credential %q does not exist", cred)
	}
	zeroCredentialFile(c)
	svc, err := b.brokerService(ctx, req.Storage, c.Service)
	if err != nil || svc == nil {
		return nil, err
	}
	usd := b.costOf(svc, usage.Usage{Model: model, InputTokens: int64(in), OutputTokens: int64(out)})
	if err := b.addSpend(ctx, req.Storage, agent, cred, usd); err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{"usd": usd}}, nil
}
