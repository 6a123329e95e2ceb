package credentials

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/plugin/store"
)

// Webhooks tell an org's own systems what happened to its credentials
// (connected, needs attention, recovered, expiring, revoked, deleted) and
// to its agents, as Standard Webhooks: JSON bodies without a secret,
// signed with the webhook's secret, delivered by the active node with
// bounded retries (webhook_delivery.go).

const webhookConfigPrefix = "webhooks/config/"

// webhookConfig is one receiver.
type webhookConfig struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	// Events it takes; empty: every event.
	Events []string `json:"events,omitempty"`
	// Credential limits it to one credential's events; empty: all.
	Credential string `json:"credential,omitempty"`
	// Secret is the signing key (the bytes of whsec_<base64>). Write-only.
	Secret      []byte `json:"secret"`
	Description string `json:"description,omitempty"`
}

// wants says whether the webhook takes ev.
func (w *webhookConfig) wants(ev *webhookEvent) bool {
	if len(w.Events) > 0 && !slices.Contains(w.Events, ev.Type) && ev.Type != eventTest {
		return false
	}
	return w.Credential == "" || w.Credential == ev.Data.Credential
}

func getWebhook(ctx context.Context, s logical.Storage, name string) (*webhookConfig, error) {
	return store.ReadJSON[webhookConfig](ctx, s, webhookConfigPrefix+name, "webhook "+name)
}

// webhooksOf returns the org's webhooks, cached until one changes (here,
// or on another node: invalidate drops the cache).
func (b *backend) webhooksOf(ctx context.Context, s logical.Storage) ([]*webhookConfig, error) {
	r := b.webhooks
	r.cacheMu.Lock()
	defer r.cacheMu.Unlock()
	if r.cached != nil {
		return *r.cached, nil
	}
	hooks, err := listWebhooks(ctx, s)
	if err != nil {
		return nil, err
	}
	r.cached = &hooks
	return hooks, nil
}

func (r *webhookRuntime) forget() {
	r.cacheMu.Lock()
	r.cached = nil
	r.cacheMu.Unlock()
}

func listWebhooks(ctx context.Context, s logical.Storage) ([]*webhookConfig, error) {
	names, err := s.List(ctx, webhookConfigPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing webhooks: %w", err)
	}
	var out []*webhookConfig
	for _, n := range names {
		w, err := getWebhook(ctx, s, n)
		if err != nil {
			return nil, err
		}
		if w != nil {
			out = append(out, w)
		}
	}
	return out, nil
}

func pathWebhooks(b *backend) []*framework.Path {
	name := &framework.FieldSchema{
		Type:        framework.TypeString,
		Description: "Name of the webhook: 1-128 lowercase letters, digits, '-', '_' or '.'. Example: vault write orgs/acme/webhooks/ops url=https://hooks.acme.example/credentials secret=whsec_... (the name is in the path)",
		Required:    true,
	}
	return []*framework.Path{
		{
			Pattern:      "webhooks/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationSuffix: "webhooks"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathWebhooksList, Summary: "List the org's webhooks with their URL and events."},
			},
			HelpSynopsis:    pathWebhooksHelpSyn,
			HelpDescription: pathWebhooksHelpDesc,
		},
		{
			Pattern:      "webhooks/" + credNameSegment("name") + "/test$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "test", OperationSuffix: "webhook"},
			Fields:       map[string]*framework.FieldSchema{"name": name},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                  b.pathWebhookTest,
					ForwardPerformanceStandby: true,
					Summary:                   "Send the webhook a webhook.test event now and answer how the receiver answered.",
				},
			},
			HelpSynopsis:    pathWebhooksHelpSyn,
			HelpDescription: pathWebhooksHelpDesc,
		},
		{
			Pattern:      "webhooks/" + credNameSegment("name") + "$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationSuffix: "webhook"},
			Fields: map[string]*framework.FieldSchema{
				"name": name,
				"url": {
					Type:        framework.TypeString,
					Description: "Where events are POSTed: https (plain http only to the operator's private targets), through the same dial guard as every call the engine makes. Example: url=https://hooks.acme.example/credentials",
				},
				"secret": {
					Type:         framework.TypeString,
					Description:  "The signing secret, as Standard Webhooks write it: whsec_ and the base64 of 24 to 64 random bytes. Write-only. Example: secret=whsec_$(openssl rand -base64 32)",
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
				},
				"events": {
					Type:        framework.TypeCommaStringSlice,
					Description: "The events sent; empty: all of " + strings.Join(webhookEventTypes, ", ") + ". Example: events=credential.needs_attention,credential.recovered",
				},
				"credential": {
					Type:        framework.TypeString,
					Description: "Only this credential's events; empty: every credential's (and the agents'). Example: credential=stripe-live",
				},
				"description": {
					Type:        framework.TypeString,
					Description: "What the webhook is for. Example: description='pages the on-call engineer'",
				},
			},
			ExistenceCheck: b.webhookExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{Callback: b.pathWebhookWrite, Summary: "Add a webhook."},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathWebhookWrite, Summary: "Change a webhook."},
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathWebhookRead, Summary: "Read a webhook (never its secret)."},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathWebhookDelete, Summary: "Delete a webhook and its undelivered events."},
			},
			HelpSynopsis:    pathWebhooksHelpSyn,
			HelpDescription: pathWebhooksHelpDesc,
		},
		{
			Pattern:      "agent-events$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "announce", OperationSuffix: "agent-event"},
			Fields: map[string]*framework.FieldSchema{
				"event": {
					Type:          framework.TypeString,
					Description:   "What happened to the agent. Example: event=agent.created",
					AllowedValues: []interface{}{eventAgentCreated, eventAgentRevoked},
					Required:      true,
				},
				"agent": {
					Type:        framework.TypeString,
					Description: "The agent's name. Example: agent=support-bot",
					Required:    true,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback: b.pathAgentEvent,
					Summary:  "Announce an agent's creation or revocation to the org's webhooks (the portal's agent management does, with the agent manager's token).",
				},
			},
			HelpSynopsis:    "Announce an agent's creation or revocation to the org's webhooks.",
			HelpDescription: "Agents are Vault AppRole roles and policies, made and removed by the portal with an agent manager's token, outside the engine; the portal tells the engine here, and the engine queues agent.created or agent.revoked for the org's webhooks.",
		},
		{
			Pattern:      "webhook-log$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationSuffix: "webhook-log"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathWebhookLog, Summary: "Read the org's recent webhook deliveries, newest first."},
			},
			HelpSynopsis:    "The org's recent webhook deliveries.",
			HelpDescription: "The last " + fmt.Sprint(webhookLogKept) + " delivery attempts of the org's webhooks, newest first: when, the webhook, the event's id and type, the attempt, the receiver's HTTP status or the error, and when the next attempt is due. Nothing in it is secret.",
		},
	}
}

func (b *backend) webhookExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	w, err := getWebhook(ctx, req.Storage, d.Get("name").(string))
	return w != nil, err
}

func webhookResponse(w *webhookConfig) map[string]interface{} {
	events := w.Events
	if events == nil {
		events = []string{}
	}
	return map[string]interface{}{
		"name": w.Name, "url": w.URL, "events": events, "credential": w.Credential, "description": w.Description,
	}
}

func (b *backend) pathWebhooksList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	all, err := listWebhooks(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	keys := []string{}
	info := map[string]interface{}{}
	for _, w := range all {
		keys = append(keys, w.Name)
		info[w.Name] = webhookResponse(w)
	}
	return logical.ListResponseWithInfo(keys, info), nil
}

func (b *backend) pathWebhookRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	w, err := getWebhook(ctx, req.Storage, d.Get("name").(string))
	if err != nil || w == nil {
		return nil, err
	}
	return &logical.Response{Data: webhookResponse(w)}, nil
}

func (b *backend) pathWebhookWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if !contract.ValidCredName(name) {
		return nil, userErrorMsg(contract.CredNameRule)
	}
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	b.webhooks.configMu.Lock()
	defer b.webhooks.configMu.Unlock()
	defer b.webhooks.forget()
	w, err := getWebhook(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if w == nil {
		w = &webhookConfig{Name: name}
	}
	if v, ok := d.GetOk("url"); ok {
		w.URL = strings.TrimSpace(v.(string))
	}
	if w.URL == "" {
		return nil, userErrorMsg("url is required: where the events are POSTed")
	}
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, userErrorf("url must be an absolute https URL without user info, not %q", truncate(w.URL, 200))
	}
	if err := b.egress.guard.CheckURL(u); err != nil {
		return nil, userErrorf("url: %v", err)
	}
	if v, ok := d.GetOk("secret"); ok {
		secret, err := parseWebhookSecret(v.(string))
		if err != nil {
			return nil, err
		}
		w.Secret = secret
	}
	if len(w.Secret) == 0 {
		return nil, userErrorMsg("secret is required: whsec_ and the base64 of 24 to 64 random bytes (secret=whsec_$(openssl rand -base64 32))")
	}
	if v, ok := d.GetOk("events"); ok {
		events := compactStrings(v.([]string))
		for _, e := range events {
			if !slices.Contains(webhookEventTypes, e) {
				return nil, userErrorf("events: %q is not one of %s", truncate(e, 64), strings.Join(webhookEventTypes, ", "))
			}
		}
		w.Events = events
	}
	if v, ok := d.GetOk("credential"); ok {
		c := strings.TrimSpace(v.(string))
		if c != "" && !contract.ValidCredName(c) {
			return nil, userErrorf("credential: %s", contract.CredNameRule)
		}
		w.Credential = c
	}
	if v, ok := d.GetOk("description"); ok {
		w.Description = v.(string)
	}
	entry, err := logical.StorageEntryJSON(webhookConfigPrefix+name, w)
	if err != nil {
		return nil, err
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("storing webhook %s: %w", name, err)
	}
	return &logical.Response{Data: webhookResponse(w)}, nil
}

// parseWebhookSecret reads whsec_<base64>, the form Standard Webhooks'
// libraries take on the receiving side.
func parseWebhookSecret(v string) ([]byte, error) {
	bad := userErrorMsg("secret must be whsec_ and the base64 of 24 to 64 random bytes (secret=whsec_$(openssl rand -base64 32))")
	rest, ok := strings.CutPrefix(strings.TrimSpace(v), "whsec_")
	if !ok {
		return nil, bad
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(key) < 24 || len(key) > 64 {
		return nil, bad
	}
	return key, nil
}

func compactStrings(v []string) []string {
	var out []string
	for _, s := range v {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func (b *backend) pathWebhookDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	b.webhooks.configMu.Lock()
	defer b.webhooks.configMu.Unlock()
	defer b.webhooks.forget()
	if err := req.Storage.Delete(ctx, webhookConfigPrefix+name); err != nil {
		return nil, fmt.Errorf("deleting webhook %s: %w", name, err)
	}
	// Its undelivered events go with it: the deliverer drops events of a
	// webhook that no longer exists.
	return nil, nil
}

func (b *backend) pathWebhookTest(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	w, err := getWebhook(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if w == nil {
		return nil, userErrorf("webhook %q does not exist", name)
	}
	ev := b.newEvent(req.MountPoint, eventTest, eventData{})
	rec := b.deliverOnce(ctx, w, ev, 1)
	if err := b.appendWebhookLog(ctx, req.Storage, rec); err != nil {
		b.logger.Warn("recording a webhook delivery", "webhook", name, "error", err)
	}
	return &logical.Response{Data: rec.response()}, nil
}

func (b *backend) pathAgentEvent(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	event, agent := d.Get("event").(string), d.Get("agent").(string)
	if event != eventAgentCreated && event != eventAgentRevoked {
		return nil, userErrorf("event must be %s or %s", eventAgentCreated, eventAgentRevoked)
	}
	if !contract.ValidCredName(agent) {
		return nil, userErrorf("agent: %s", contract.CredNameRule)
	}
	b.queueEvent(ctx, req.Storage, b.newEvent(req.MountPoint, event, eventData{Agent: agent}))
	return nil, nil
}

func (b *backend) pathWebhookLog(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	recs, err := readWebhookLog(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	out := make([]interface{}, 0, len(recs))
	for i := len(recs) - 1; i >= 0; i-- {
		out = append(out, recs[i].response())
	}
	return &logical.Response{Data: map[string]interface{}{"deliveries": out}}, nil
}

const pathWebhooksHelpSyn = "Webhooks: the org's own systems told of credential and agent events."

const pathWebhooksHelpDesc = `
A webhook receives the org's events as Standard Webhooks: a POST of a JSON
body {"type", "timestamp", "data"} holding no secret, with the headers
webhook-id, webhook-timestamp and webhook-signature (v1, HMAC-SHA256 of
id.timestamp.body with the webhook's secret), so the receiver checks it with
any Standard Webhooks library. Events: credential.connected,
credential.needs_attention, credential.recovered, credential.expiring,
credential.revoked, credential.deleted, agent.created, agent.revoked;
webhook.test from webhooks/<name>/test.

The active node delivers them in order per webhook, each within 10 seconds,
retried on a failure or a non-2xx answer after 5 s, 30 s, 2 min, 10 min,
30 min and 1 h, then given up; webhook-log keeps the recent attempts.

  vault write orgs/acme/webhooks/ops url=https://hooks.acme.example/credentials \
      secret=whsec_$(openssl rand -base64 32) events=credential.needs_attention,credential.recovered
  vault write -f orgs/acme/webhooks/ops/test
  vault read orgs/acme/webhook-log
`
