package credentials

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
)

// edgeReuse is how long the edge may hold a sealed injection (as
// ciphertext) for one agent token before it asks again; Vault still
// authorizes each call. A replaced, disconnected or deleted credential is
// therefore used by the edge for at most this long after the change.
const edgeReuse = 15 * time.Second

// The Vault path buffers each call in the plugin, which serves every org
// of the Vault: its answers are bounded below broker_max_body's own
// ceiling, and so is the number of its calls at once per mount, so that
// one tenant cannot fill the shared process. The edge streams and is
// bounded by neither.
const (
	vaultPathMaxAnswer  = 16 << 20
	vaultPathConcurrent = 16
	vaultPathSlotWait   = 5 * time.Second
)

// vaultPathMaxBody is the largest request body the Vault path can carry:
// Vault caps a JSON string at 1 MiB (max_json_string_value_length), and
// the body travels base64-encoded in one.
const vaultPathMaxBody = 786432

// Long on purpose: a declaration (fields and operations), read top to bottom.
func pathProxy(b *backend) []*framework.Path {
	callFields := map[string]*framework.FieldSchema{
		"headers": {
			Type:        framework.TypeHeader,
			Description: `Request headers: headers=Content-Type:application/json (repeat headers= for more), or a JSON object, headers='{"Content-Type": "application/json"}'. Authorization, cookies, X-Vault-* and hop-by-hop headers are dropped; X-Original-URL and its kin are refused. Example: headers=Accept:application/json headers=X-Trace:abc`,
		},
		"body": {
			Type:        framework.TypeString,
			Description: "Request body, base64-encoded (standard encoding): at most broker_max_body bytes decoded, and at most 786432 bytes through Vault (its 1 MiB JSON string limit). Larger bodies go through the portal's edge. Example: body=$(printf '{\"limit\":3}' | base64 -w0)",
		},
		"upstream_refused": {
			Type:        framework.TypeBool,
			Description: "Sealed mode: the service refused the access token the edge was given (401). The engine refreshes the OAuth grant unless it was refreshed in the last few seconds, and answers with the token it then holds. Example: upstream_refused=true",
		},
		"approval_id": {
			Type:        framework.TypeString,
			Description: "The approval a person gave this call, when the credential's approval rules hold it: the ID the held call was answered with. The call must be the same (method, path, query, body). Example: approval_id=4f1c2b3a4d5e6f708192a3b4",
		},
		egress.FieldEdgeKey: {
			Type:        framework.TypeString,
			Description: "Sealed mode, for the portal's edge: make no call, and answer the call's injection sealed (HPKE) to this edge key id, one the operator configured in " + egress.EdgeKeysEnv + ". Example: edge_key=edge-2026",
		},
	}
	responses := map[int][]framework.Response{
		http.StatusOK: {{
			Description: "The service's answer (or, in sealed mode, the sealed injection).",
			Fields: map[string]*framework.FieldSchema{
				"status":           {Type: framework.TypeInt, Description: "The service's HTTP status."},
				"headers":          {Type: framework.TypeHeader, Description: "The service's response headers, scrubbed of the credential."},
				"body":             {Type: framework.TypeString, Description: "The service's response body, base64-encoded, scrubbed of the credential."},
				"body_text":        {Type: framework.TypeString, Description: "The same body as text, when it is text (JSON, XML, text/*): vault write -field=body_text prints it."},
				"redirect_path":    {Type: framework.TypeString, Description: "For a redirect within the service's first base URL: its path relative to that URL."},
				egress.FieldSealed: {Type: framework.TypeString, Description: "Sealed mode: the injection, sealed to the edge key; only the edge can open it."},
				"approval_id": {
					Type:        framework.TypeString,
					Description: "The approval a person gave this call, when the credential's approval rules hold it: the ID the held call was answered with. The call must be the same (method, path, query, body). Example: approval_id=4f1c2b3a4d5e6f708192a3b4",
				},
				egress.FieldEdgeKey: {Type: framework.TypeString, Description: "Sealed mode: the edge key id it is sealed to."},
				"use_until":         {Type: framework.TypeTime, Description: "Sealed mode: until when the edge may reuse it for this token."},
			},
		}},
	}
	withFields := func(extra map[string]*framework.FieldSchema) map[string]*framework.FieldSchema {
		out := map[string]*framework.FieldSchema{}
		for k, v := range callFields {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	methods := strings.Join(append(slices.Clone(contract.Methods), contract.MethodTool), "|")
	return []*framework.Path{
		// Most specific first: the form with method and path in the Vault
		// path, then the one with them in the body.
		{
			Pattern: "proxy/" + credNameSegment("name") + "/(?P<method>" + methods + ")(?P<path>/.*)?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "credentials",
				OperationVerb:   "proxy",
				OperationSuffix: "call",
			},
			Fields: withFields(map[string]*framework.FieldSchema{
				"name":   {Type: framework.TypeString, Description: "The credential to call the service with. Example: vault write orgs/acme/proxy/stripe-live/GET/v1/balance (the name is in the path)", Required: true},
				"method": {Type: framework.TypeString, Description: "HTTP method, in the path: " + strings.Join(contract.Methods, ", ") + "; or TOOL, for a tool of the service's remote MCP server (sealed mode only: the portal's MCP server makes the call). Example: vault write orgs/acme/proxy/stripe-live/POST/v1/customers"},
				"path":   {Type: framework.TypeString, Description: "The service's path, in the Vault path after the method (/v1/balance), relative to the service's first base URL; after TOOL, the remote tool's name (none: listing the tools). Agents' rules are Vault ACL paths over it. Example: vault write orgs/acme/proxy/stripe-live/GET/v1/charges"},
				"query":  {Type: framework.TypeString, Description: "The query string, without '?' (limit=3&starting_after=x). Never matched by agents' rules. Example: query='limit=3&starting_after=ch_1'"},
			}),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback: b.pathProxyCallWrite,
					// A provider may be called: on a performance standby, Vault
					// forwards this to the node that can store the answer.
					ForwardPerformanceStandby: true,
					Summary:                   "Call the credential's service, with method and path in the Vault path so that Vault's ACL decides them.",
					Responses:                 responses,
				},
			},
			HelpSynopsis:    pathProxyHelpSyn,
			HelpDescription: pathProxyHelpDesc,
		},
		{
			Pattern: "proxy/" + credNameSegment("name") + "$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "credentials",
				OperationVerb:   "proxy",
			},
			Fields: withFields(map[string]*framework.FieldSchema{
				"name": {Type: framework.TypeString, Description: "The credential to call the service with. Example: vault write orgs/acme/proxy/stripe-live method=GET path=/v1/balance (the name is in the path)", Required: true},
				"method": {
					Type:          framework.TypeString,
					Description:   "HTTP method, upper case. Example: method=POST",
					Default:       http.MethodGet,
					AllowedValues: allowedMethods(),
				},
				"path": {
					Type:        framework.TypeString,
					Description: "Path with query, relative to the service's first base URL (/v1/balance?limit=3), or an absolute URL under one of its base_urls. Example: path='/v1/charges?limit=3'",
					Required:    true,
				},
			}),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: b.useReadOperation(),
				logical.UpdateOperation: &framework.PathOperation{
					Callback: b.pathProxyWrite,
					// A provider may be called: on a performance standby, Vault
					// forwards this to the node that can store the answer.
					ForwardPerformanceStandby: true,
					Summary:                   "Call the credential's service with the credential injected.",
					Responses:                 responses,
				},
			},
			HelpSynopsis:    pathProxyHelpSyn,
			HelpDescription: pathProxyHelpDesc,
		},
	}
}

// pathProxyWrite is proxy/<name> with method and path as fields.
func (b *backend) pathProxyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	method := d.Get("method").(string)
	if !contract.ValidMethod(method) {
		return nil, userErrorf("method must be one of %s in upper case", strings.Join(contract.Methods, ", "))
	}
	return b.proxy(ctx, req, d, method, d.Get("path").(string))
}

// pathProxyCallWrite is proxy/<name>/<METHOD>/<path>: the path Vault's ACL
// saw is decoded; it is checked as it is and escaped again to be sent.
func (b *backend) pathProxyCallWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	for _, f := range []string{"method", "path"} {
		if _, ok := req.Data[f]; ok {
			return nil, userErrorf("%s is part of the Vault path here (proxy/<name>/<METHOD>/<path>), not a field", f)
		}
	}
	decoded := d.Get("path").(string)
	if d.Get("method").(string) == contract.MethodTool {
		return b.proxyTool(ctx, req, d, decoded)
	}
	if decoded == "" {
		decoded = "/"
	}
	escaped := (&url.URL{Path: decoded}).EscapedPath()
	if again, err := egress.CleanPath(escaped); err != nil {
		return nil, err
	} else if again != decoded {
		return nil, userErrorf("path is not in normal form")
	}
	target := escaped
	if q := d.Get("query").(string); q != "" {
		target += "?" + strings.TrimPrefix(q, "?")
	}
	return b.proxy(ctx, req, d, d.Get("method").(string), target)
}

// proxy is one brokered call, or in sealed mode the call's injection.
func (b *backend) proxy(ctx context.Context, req *logical.Request, d *framework.FieldData, method, path string) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateCredName(name); err != nil {
		return nil, err
	}
	header, _ := d.Get("headers").(http.Header)
	edgeKey := d.Get(egress.FieldEdgeKey).(string)

	// The configuration is cached, so a call costs one storage read: the
	// credential. Each read is a round trip from the plugin to Vault, and
	// the broker's latency is mostly such round trips.
	cfg, err := b.brokerConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	// A bad body is answered before a missing or refused credential.
	body, err := decodeProxyBody(d.Get("body").(string), min(cfg.BrokerMaxBody, vaultPathMaxBody))
	if err != nil {
		return nil, err
	}
	c, err := b.usableCredential(ctx, req, name)
	if err != nil {
		return nil, err
	}
	defer zeroCredentialFile(c)
	svc, err := b.brokerService(ctx, req.Storage, c.Service)
	if err != nil {
		return nil, err
	}
	if svc == nil {
		return nil, userErrorf("service %q of credential %q no longer exists", c.Service, name)
	}
	rules, err := getApprovalRules(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	agent := b.agentOf(req)
	if edgeKey != "" {
		if rules != nil && agent == "" {
			return nil, &userError{Status: http.StatusForbidden, Permanent: true, Msg: "calls of credential " + name + " may need a person's approval, and the edge holds agents' calls only: call it with an agent's token, or through the Vault path"}
		}
		return b.sealedInjection(ctx, req, cfg, svc, c, edgeKey, path, rules.forAgent(agent))
	}
	requester := b.requesterOf(req, agent)
	if held := rules.forAgent(requester); len(held) > 0 {
		if resp, err := b.holdVaultCall(ctx, req, d, cfg, rules, requester, name, method, path, body); resp != nil || err != nil {
			return resp, err
		}
	}

	if _, err := b.takeCalls(ctx, req.Storage, requester, name, 1); err != nil {
		return nil, err
	}
	// A call waits a little for a slot (it holds no buffer while it
	// waits), then is turned away.
	wait := time.NewTimer(b.vaultPathSlotWait)
	defer wait.Stop()
	select {
	case b.vaultPathSlots <- struct{}{}:
		defer func() { <-b.vaultPathSlots }()
	case <-wait.C:
		return nil, logical.CodedError(http.StatusServiceUnavailable, fmt.Sprintf(
			"this org already has %d calls in flight through the Vault path: retry, or call through the portal's edge, which has no such limit", vaultPathConcurrent))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	started := time.Now()
	out, err := b.brokerCall(ctx, req.Storage, cfg, svc, c, brokerRequest{
		method: method, path: path, header: header, body: body, maxAnswer: vaultPathMaxAnswer,
	})
	line := trailLine{At: started.UTC(), Ingress: "vault", Credential: name, Method: method, Path: contract.TrailPath(path)}
	if err != nil {
		b.metrics.call("vault", 0)
		line.DurationMS = msSince(started)
		b.recordCall(req, line)
		return nil, err
	}
	b.metrics.call("vault", out.status)
	b.lastUse.record(name, b.callerOf(req), b.now().UTC())
	if err := b.meterVaultCall(ctx, req.Storage, requester, svc, name, out.header, out.body); err != nil {
		b.logger.Warn("counting a call's spend", "name", name, "error", err)
	}
	line.Status, line.Bytes, line.DurationMS = out.status, int64(len(out.body)), msSince(started)
	b.recordCall(req, line)

	data := map[string]interface{}{
		"status":  out.status,
		"headers": headerMap(out.header),
		"body":    base64.StdEncoding.EncodeToString(out.body),
	}
	if textual(out.header.Get("Content-Type"), out.body) {
		data["body_text"] = string(out.body)
	}
	clear(out.body)
	if out.redirectPath != "" {
		data["redirect_path"] = out.redirectPath
	}
	return &logical.Response{Data: data}, nil
}

// proxyTool is proxy/<name>/TOOL[/<tool>]: a call of a tool of the
// service's remote MCP server (or, without a tool, listing them), which
// only the edge makes: the engine answers the injection for the server's
// URL. Vault's ACL has decided the tool by then.
func (b *backend) proxyTool(ctx context.Context, req *logical.Request, d *framework.FieldData, path string) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateCredName(name); err != nil {
		return nil, err
	}
	if tool := strings.TrimPrefix(path, "/"); path != "" && !contract.ValidToolName(tool) {
		return nil, userErrorf("a tool name is 1 to 128 of A-Z, a-z, 0-9, '_', '-' and '.'; %q is not", truncate(tool, 140))
	}
	edgeKey := d.Get(egress.FieldEdgeKey).(string)
	if edgeKey == "" {
		return nil, userErrorf("remote MCP tools are called through the portal's MCP server (/mcp/<org>), which asks here in sealed mode (edge_key); this path makes no call itself")
	}
	cfg, err := b.brokerConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	c, err := b.usableCredential(ctx, req, name)
	if err != nil {
		return nil, err
	}
	defer zeroCredentialFile(c)
	svc, err := b.brokerService(ctx, req.Storage, c.Service)
	if err != nil {
		return nil, err
	}
	if svc == nil {
		return nil, userErrorf("service %q of credential %q no longer exists", c.Service, name)
	}
	if svc.MCPURL == "" {
		return nil, userErrorf("service %s of credential %s has no remote MCP server (mcp_url): call its HTTP API with a method instead of TOOL", c.Service, name)
	}
	rules, err := getApprovalRules(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	return b.sealedInjection(ctx, req, cfg, svc, c, edgeKey, svc.MCPURL, rules.forAgent(b.agentOf(req)))
}

// sealedInjection answers the edge: no call to the service, but everything
// the edge needs to make it, sealed to its key. The request is checked
// here as it would be for a call, the token refreshed or minted if due and
// the use recorded: a call the edge then makes is one this answer allowed.
func (b *backend) sealedInjection(ctx context.Context, req *logical.Request, cfg *mountConfig, svc *service, c *credential, keyID, path string, approvalRules []string) (*logical.Response, error) {
	if len(b.egress.edgeKeys) == 0 {
		return nil, logical.CodedError(http.StatusNotImplemented, errNoEdgeKeys.Error())
	}
	grant := b.grantFor(cfg, svc, c)
	grant.ApprovalRules = approvalRules
	limited, err := b.limited(ctx, req.Storage, b.requesterOf(req, b.agentOf(req)), c.Name)
	if err != nil {
		return nil, err
	}
	grant.Limited = limited
	grant.MeterUsage = limited && len(b.pricing(svc)) > 0
	if _, err := egress.ResolveTarget(grant.Service, path); err != nil {
		return nil, err
	}
	if refused, _ := req.Data["upstream_refused"].(bool); refused && c.Type == typeOAuth2 && !c.ClientCredentials {
		// The grant may have been revoked or its token cut short at the
		// provider: one refresh, shared by every caller told the same, and
		// skipped when one just ran. What it leaves, failure included, is
		// what the material below reads.
		r := b.refreshShared(ctx, req.Storage, c.Name, refreshRefused)
		if errors.Is(r.err, logical.ErrReadOnly) {
			return nil, logical.ErrReadOnly
		}
		again, err := b.usableCredential(ctx, req, c.Name)
		if err != nil {
			return nil, err
		}
		defer zeroCredentialFile(again)
		c = again
	}
	material, err := b.credentialMaterial(ctx, req.Storage, svc, c)
	if err != nil {
		return nil, err
	}
	defer material.Zero()
	grant.Material = material
	grant.UseUntil = b.now().Add(edgeReuse).UTC()
	if b.agentOf(req) != "" {
		if grant.ReportKey, err = b.trailKeyFor(ctx, req.Storage, req.EntityID); err != nil {
			return nil, err
		}
	}
	sealed, err := egress.SealInjection(b.egress.edgeKeys, keyID, req.MountPoint, grant)
	if errors.Is(err, egress.ErrUnknownEdgeKey) {
		return nil, userErrorf("edge key %q is not one the operator configured", truncate(keyID, 32))
	}
	if err != nil {
		return nil, err
	}
	b.lastUse.record(c.Name, b.callerOf(req), b.now().UTC())
	b.metrics.brokerCalls.WithLabelValues("edge", "issued").Inc()
	return &logical.Response{Data: map[string]interface{}{
		egress.FieldSealed:  sealed,
		egress.FieldEdgeKey: keyID,
		"use_until":         grant.UseUntil.Format(time.RFC3339Nano),
	}}, nil
}

// textual says whether an answer body can be shown as text.
func textual(contentType string, body []byte) bool {
	if !utf8.Valid(body) {
		return false
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return len(body) == 0 || contentType == ""
	}
	return strings.HasPrefix(mt, "text/") || strings.HasSuffix(mt, "json") || strings.HasSuffix(mt, "xml") ||
		mt == "application/javascript" || mt == "application/x-www-form-urlencoded" || mt == "application/x-ndjson"
}

// decodeProxyBody decodes the base64 body, refusing one over max bytes
// before decoding it.
func decodeProxyBody(raw string, max int64) ([]byte, error) {
	if raw == "" {
		return nil, nil
	}
	if int64(len(raw)) > int64(base64.StdEncoding.EncodedLen(int(min(max, maxBrokerMaxBody))))+4 {
		return nil, tooLarge(max)
	}
	body, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, userErrorf("body must be base64 (standard encoding)")
	}
	if int64(len(body)) > max {
		return nil, tooLarge(max)
	}
	return body, nil
}

// headerMap is h as plain JSON-friendly data, names sorted for stable output.
func headerMap(h http.Header) map[string]interface{} {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	m := make(map[string]interface{}, len(h))
	for _, k := range names {
		m[k] = append([]string(nil), h[k]...)
	}
	return m
}

const pathProxyHelpSyn = `Call a service with a credential, without seeing the credential (the broker).`

const pathProxyHelpDesc = `
The broker makes one HTTP request to the credential's service on the caller's
behalf and injects the credential as the service's catalog entry says: an API
key as a bearer token, a named header (x-api-key) or basic auth; a user name
and password as basic auth; an OAuth 2 access token, refreshed when due; an
access token minted from a GCP service-account key. The caller never sees the
secret: it is scrubbed from the answer's headers and body, also base64-, hex-,
URL-, JSON- and HTML-encoded.

Two forms, one engine:

  proxy/<name>                   method (default GET) and path (with query) as fields
  proxy/<name>/<METHOD>/<path>   method and path in the Vault path, query as a field

The second is what agents with rules use: an agent allowed only GET
/v1/balance holds update on orgs/<org>/proxy/<name>/GET/v1/balance, so
Vault's own ACL decides its method and path segment by segment, and never
looks at the query.

In: headers, body (base64). Out: status, headers, body (base64), body_text
(the body as text, when it is text), and redirect_path for a redirect within
the service.

A service with a remote MCP server (mcp_url) has its tools called through
the portal's MCP server (/mcp/<org>), which asks here in sealed mode on

  proxy/<name>/TOOL/<tool>       calling one tool
  proxy/<name>/TOOL              listing the tools, opening a session

so an agent allowed only some tools holds update on exactly those paths.
upstream_refused=true (sealed mode) says the service refused the token the
edge was given: the OAuth grant is refreshed once, unless it just was.

Reading proxy/<name> describes the credential to an agent allowed to read it
(agents' policies grant it): service, base URL, docs, status. No secret.

  vault read orgs/acme/proxy/stripe-live

This Vault path buffers the call, for the CLI and small calls: its request
body is at most 786432 bytes (Vault's 1 MiB JSON string limit on the base64
body) and the whole call must finish within Vault's max_request_duration
(90s by default), whatever broker_timeout says. Agents' streamed, large and
long calls go through the portal's edge (/broker/<org>/<name>/<path>), which
asks for the injection here in sealed mode (edge_key): then no call is
made, and the answer is sealed to an edge key the operator configured, so a
caller without the edge's private key learns nothing from it.

Guard rails: only the service's base_urls are called; '.' and '..' segments
(also "..;" and encoded), encoded slashes and empty segments are refused; no
redirect is followed (it is returned, credential-free); the caller's
Authorization, cookies, X-Vault-* and hop-by-hop headers are dropped;
compressed answers are decoded before scrubbing (unknown codings refused);
each call is bounded by broker_timeout and broker_max_body (config);
loopback, private and link-local addresses are refused, checked on the
address actually dialled, unless the operator allowed them
(CREDENTIALS_PRIVATE_TARGETS). The call records the credential's last use
and the caller (Vault entity).

  vault write orgs/acme/proxy/stripe-live method=GET path=/v1/balance
  vault write -field=body_text orgs/acme/proxy/stripe-live/GET/v1/charges query=limit=3
  vault write orgs/acme/proxy/anthropic method=POST path=/v1/messages \
      headers=Content-Type:application/json body=$(base64 -w0 request.json)
`

// allowedMethods is contract.Methods as a schema's allowed values.
func allowedMethods() []interface{} {
	out := make([]interface{}, len(contract.Methods))
	for i, m := range contract.Methods {
		out[i] = m
	}
	return out
}
