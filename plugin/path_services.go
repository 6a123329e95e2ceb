package credentials

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/plugin/provider"
	"github.com/clankteam/credentials/plugin/store"
)

const serviceStoragePrefix = "services/"

// getService returns a built-in or custom service; nil when neither exists.
func (b *backend) getService(ctx context.Context, s logical.Storage, name string) (*service, error) {
	if svc, ok := builtinServices[name]; ok {
		return svc, nil
	}
	return store.ReadJSON[service](ctx, s, serviceStoragePrefix+name, "service "+name)
}

func pathServices(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "services/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "credentials",
				OperationSuffix: "services",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback: b.pathServicesList,
					Summary:  "List the catalog: built-in and custom services.",
				},
			},
			HelpSynopsis:    pathServicesHelpSyn,
			HelpDescription: pathServicesHelpDesc,
		},
		{
			Pattern: "services/" + credNameSegment("name") + "$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "credentials",
				OperationSuffix: "service",
			},
			Fields: map[string]*framework.FieldSchema{
				"name":          {Type: framework.TypeString, Description: "Service name: 1-64 lowercase letters, digits, '-', '_' or '.'. Example: vault write orgs/acme/services/billing-api ... (the name is in the path)", Required: true},
				"display_name":  {Type: framework.TypeString, Description: "Name shown to people. Default: the service's name. Example: display_name='Billing API'"},
				"description":   {Type: framework.TypeString, Description: "What the service is, in a sentence or two (at most 500 characters): shown to people and in agents' MCP tool descriptions. Example: description='Billing API: invoices, customers, payments.'"},
				"notes":         {Type: framework.TypeString, Description: "What a person should know of the service: quirks, and what is assumed rather than documented by the provider (at most 1000 characters). Example: notes='Keys are per region; the EU key only works on eu.billing.example.'"},
				"docs_url":      {Type: framework.TypeString, Description: "The service's API documentation, an https URL, linked from agents' tool descriptions. Example: docs_url=https://billing.example/docs"},
				"types":         {Type: framework.TypeCommaStringSlice, Description: "Credential types the service takes: oauth2, api_key, password, file. Example: types=api_key,oauth2"},
				"base_urls":     {Type: framework.TypeCommaStringSlice, Description: "The only URL prefixes the broker may call, e.g. https://api.example.com; a host may start with *. Example: base_urls=https://billing.example,https://*.billing.example"},
				"injection":     {Type: framework.TypeMap, Description: `Per credential type, how the broker injects it, a JSON object (from the CLI as text or @file.json): {"api_key": {"style": "header", "header": "Authorization", "format": "Bearer {secret}"}}; styles header (header, format), basic (user), query (query), body (field: a top-level JSON or form field, written only there). Example: injection=@injection.json`},
				"oauth":         {Type: framework.TypeMap, Description: "OAuth endpoints and quirks, a JSON object (from the CLI as text or @file.json): auth_url, token_url, revoke_url, revoke_style (rfc7009, github, slack, none), userinfo_url, default_scopes, scope_sets, scope_separator, auth_params, pkce (true: PKCE with S256), token_auth_method (client_secret_post, the default; client_secret_basic; none: a public client, pkce required), issuer and iss_required (RFC 9207's iss on callbacks), discovery_url (OpenID Connect or RFC 8414 metadata, which fills the fields left out), resource (RFC 8707, sent on the authorize and every token request), registration_url (RFC 7591), keep_alive, errors_with_200, accept_json, ok_field, single_use_refresh. Example: oauth='{\"discovery_url\": \"https://id.example/.well-known/openid-configuration\"}'"},
				"verify":        {Type: framework.TypeMap, Description: `A request that proves a credential works, a JSON object (from the CLI as text or @file.json): {"method": "GET", "url": "https://api.example.com/me", "expect_status": 200}. Example: verify=@verify.json`},
				"requires_host": {Type: framework.TypeBool, Description: "Password credentials of this service need host and port. Example: requires_host=true"},
				"pricing":       {Type: framework.TypeMap, Description: `What the service's models cost in US dollars per million tokens, by model name prefix (the longest that matches wins), a JSON object: {"my-model": {"input_per_mtok": 3, "output_per_mtok": 15}}. Spend limits (limits/, usd=) are metered from the usage the answers report, priced by this (the operator's CREDENTIALS_PRICES wins). Example: pricing=@pricing.json`},
				"mcp_url":       {Type: framework.TypeString, Description: "The service's remote MCP server (its Streamable HTTP endpoint). Writing it finds the server's authorization server (its 401 or RFC 9728 metadata, then RFC 8414 or OpenID Connect metadata; PKCE with S256 required), which fills oauth's endpoints, issuer, pkce and resource (RFC 8707, sent on every authorize and token request) and registration_url (RFC 7591, for apps written with register=true). base_urls defaults to the server's URL. Example: mcp_url=https://mcp.example.com/mcp"},
				"mcp_from":      {Type: framework.TypeString, Description: "A preset whose remote MCP server (its mcp_server, shown by vault read orgs/<org>/services/<preset>) this service is: mcp_url is the preset's server and the OAuth is found from it as for mcp_url; display_name and description default to the preset's MCP server's. Not with mcp_url. Presets with one: github, linear, notion, atlassian, stripe. Example: vault write orgs/acme/services/linear-mcp mcp_from=linear"},
				"github_app":    {Type: framework.TypeBool, Description: "File credentials of this service are GitHub App private keys: the broker injects 1-hour installation tokens minted from the first base URL (a GitHub Enterprise Server's https://host/api/v3). Default false. Example: github_app=true"},
			},
			ExistenceCheck: b.serviceExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{Callback: b.pathServiceWrite, Summary: "Add a custom service."},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathServiceWrite, Summary: "Replace a custom service's definition."},
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathServiceRead, Summary: "Read a service's definition."},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathServiceDelete, Summary: "Delete a custom service no credential uses."},
			},
			HelpSynopsis:    pathServicesHelpSyn,
			HelpDescription: pathServicesHelpDesc,
		},
	}
}

func (b *backend) serviceExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	svc, err := b.getService(ctx, req.Storage, d.Get("name").(string))
	return svc != nil, err
}

func (b *backend) pathServicesList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	custom, err := req.Storage.List(ctx, serviceStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing services: %w", err)
	}
	keyInfo := map[string]interface{}{}
	for name, svc := range builtinServices {
		keyInfo[name] = serviceKeyInfo(svc)
	}
	for _, name := range custom {
		svc, err := b.getService(ctx, req.Storage, name)
		if err != nil {
			return nil, err
		}
		if svc != nil {
			keyInfo[name] = serviceKeyInfo(svc)
		}
	}
	keys := make([]string, 0, len(keyInfo))
	for k := range keyInfo {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return logical.ListResponseWithInfo(keys, keyInfo), nil
}

func serviceKeyInfo(svc *service) map[string]interface{} {
	return map[string]interface{}{
		"display_name": svc.DisplayName,
		"types":        svc.Types,
		"builtin":      svc.Builtin,
	}
}

func (b *backend) pathServiceRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	svc, err := b.getService(ctx, req.Storage, d.Get("name").(string))
	if err != nil || svc == nil {
		return nil, err
	}
	// The definition holds no secret; its JSON form is its documentation.
	raw, err := json.Marshal(svc)
	if err != nil {
		return nil, fmt.Errorf("encoding service: %w", err)
	}
	var data map[string]interface{}
	if err := json.Unmarshal(raw, &data); err != nil {
		return nil, fmt.Errorf("encoding service: %w", err)
	}
	data["builtin"] = svc.Builtin
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathServiceWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if _, ok := builtinServices[name]; ok {
		return nil, userErrorf("service %q is built in and cannot be changed; add a custom service under another name", name)
	}
	if _, ok := req.Data["allow_private_targets"]; ok {
		return nil, userErrorf("allow_private_targets is not a service field: which private addresses the engine may reach is the operator's setting (%s when registering the plugin), outside any org's reach", egress.PrivateTargetsEnv)
	}
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	// The request's fields are decoded into the service type strictly, so a
	// misspelt nested key is refused rather than ignored.
	fields := map[string]interface{}{"name": name}
	for k := range d.Schema {
		if v, ok := d.GetOk(k); ok && k != "mcp_from" {
			fields[k] = v
		}
	}
	if from, ok := d.GetOk("mcp_from"); ok {
		if err := fromPresetsMCPServer(fields, from.(string)); err != nil {
			return nil, err
		}
	}
	raw, err := json.Marshal(fields)
	if err != nil {
		return nil, userErrorf("service definition is not valid JSON")
	}
	svc := new(service)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(svc); err != nil {
		return nil, userErrorf("service definition: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if svc.DisplayName == "" {
		svc.DisplayName = name
	}
	// Discovery is read before the service lock is taken: it is a call to
	// the provider.
	if svc.MCPURL != "" {
		if err := b.discoverMCP(ctx, svc); err != nil {
			return nil, err
		}
	}
	if svc.OAuth != nil && svc.OAuth.DiscoveryURL != "" {
		d, pe := b.oauth.provider.Discover(ctx, svc.OAuth.DiscoveryURL)
		if pe != nil {
			return nil, userErrorf("oauth.discovery_url: %s", pe.Msg)
		}
		d.Fill(svc.OAuth)
	}
	if err := svc.Validate(); err != nil {
		return nil, userErrorMsg(err.Error())
	}
	b.refsMu.Lock()
	defer b.refsMu.Unlock()
	// A service may not drop a type its existing credentials have.
	lines, err := b.index.Lines(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	var users []string
	for _, l := range lines {
		if l.Service != name {
			continue
		}
		if !svc.Takes(l.Type) {
			return nil, userErrorf("credential %q of this service is of type %s, which types must keep", l.Name, l.Type)
		}
		users = append(users, "credential "+l.Name)
	}
	if err := b.checkBoundFields(ctx, req.Storage, name, svc, users); err != nil {
		return nil, err
	}
	entry, err := logical.StorageEntryJSON(serviceStoragePrefix+name, svc)
	if err != nil {
		return nil, fmt.Errorf("encoding service: %w", err)
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("storing service: %w", err)
	}
	return nil, nil
}

// fromPresetsMCPServer makes fields a service of the named preset's remote
// MCP server: its URL, and unless given, its name for people, a
// description and types=oauth2.
func fromPresetsMCPServer(fields map[string]interface{}, from string) error {
	preset, ok := builtinServices[from]
	if !ok {
		return userErrorf("mcp_from: there is no preset %q (vault list orgs/<org>/services shows them)", from)
	}
	if preset.MCPServer == "" {
		return userErrorf("mcp_from: preset %q has no remote MCP server; give the server's URL as mcp_url", from)
	}
	if _, ok := fields["mcp_url"]; ok {
		return userErrorf("give mcp_from or mcp_url, not both")
	}
	fields["mcp_url"] = preset.MCPServer
	if _, ok := fields["display_name"]; !ok {
		fields["display_name"] = preset.DisplayName + " MCP"
	}
	if _, ok := fields["description"]; !ok {
		fields["description"] = preset.DisplayName + "'s remote MCP server: its tools, called with the organization's OAuth grant."
	}
	if _, ok := fields["types"]; !ok {
		fields["types"] = []string{typeOAuth2}
	}
	if _, ok := fields["docs_url"]; !ok && preset.DocsURL != "" {
		fields["docs_url"] = preset.DocsURL
	}
	return nil
}

// discoverMCP fills svc's OAuth from its remote MCP server's authorization
// discovery; the fields written by hand are kept.
func (b *backend) discoverMCP(ctx context.Context, svc *service) error {
	if len(svc.BaseURLs) == 0 {
		svc.BaseURLs = []string{svc.MCPURL}
	}
	if !svc.Takes(typeOAuth2) {
		return userErrorf("mcp_url needs a service taking oauth2 (types=oauth2): a remote MCP server's tokens are OAuth grants")
	}
	m, pe := b.oauth.provider.DiscoverMCP(ctx, svc.MCPURL)
	if pe != nil {
		return userErrorf("mcp_url: %s", pe.Msg)
	}
	if svc.OAuth == nil {
		svc.OAuth = &provider.Spec{}
	}
	o := svc.OAuth
	if o.Resource == "" {
		o.Resource = m.Resource
	}
	if o.RegistrationURL == "" {
		o.RegistrationURL = m.RegistrationURL
	}
	o.CIMD = o.CIMD || m.CIMD
	if len(o.DefaultScopes) == 0 {
		o.DefaultScopes = m.Scopes
	}
	m.Auth.Fill(o)
	o.PKCE = true // the MCP authorization spec requires it; discovery checked S256
	return nil
}

func (b *backend) pathServiceDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if _, ok := builtinServices[name]; ok {
		return nil, userErrorf("service %q is built in and cannot be deleted", name)
	}
	b.refsMu.Lock()
	defer b.refsMu.Unlock()
	lines, err := b.index.Lines(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	var users []string
	for _, l := range lines {
		if l.Service == name {
			users = append(users, l.Name)
		}
	}
	apps, err := req.Storage.List(ctx, appStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing apps: %w", err)
	}
	for _, an := range apps {
		a, err := getApp(ctx, req.Storage, an)
		if err != nil {
			return nil, err
		}
		if a != nil && a.Service == name {
			users = append(users, "app "+an)
		}
	}
	if len(users) > 0 {
		return nil, userErrorf("service %q is used by %d credential(s) or app(s) (%s): delete them first", name, len(users), strings.Join(firstN(users, 5), ", "))
	}
	if err := req.Storage.Delete(ctx, serviceStoragePrefix+name); err != nil {
		return nil, fmt.Errorf("deleting service: %w", err)
	}
	return nil, nil
}

const pathServicesHelpSyn = `The service catalog: what each service takes and how the engine talks to it.`

const pathServicesHelpDesc = `
Built-in services (airtable, anthropic, asana, atlassian, box, discord,
dropbox, figma, gcp-service-account, github, github-app, gitlab, google,
hubspot, linear, mailgun, microsoft, notion, openai, salesforce, sendgrid,
slack, smtp, spotify, stripe, twilio, zoom) can be read but not changed.
Custom services can be added for internal or other APIs. A service says which
credential types it takes (types), the only URL prefixes the broker may call
(base_urls), how each type is injected (injection), its OAuth endpoints and
quirks (oauth) and a verify request (verify). Nothing here is secret. Object
fields take a JSON object, from the CLI as text or as @file.json.

While credentials or apps use a custom service, its base_urls, injection,
oauth and verify cannot change: the secrets written under it were given for
those URLs. Define a new service and write the secrets again under it. Which
loopback or private addresses may be reached is the operator's setting
(CREDENTIALS_PRIVATE_TARGETS at plugin registration), never a service's.

  vault list -detailed orgs/acme/services
  vault read orgs/acme/services/stripe
  vault write orgs/acme/services/billing-api types=api_key \
      base_urls=https://billing.internal.example \
      injection='{"api_key":{"style":"header","header":"X-Api-Key","format":"{secret}"}}'
  vault write orgs/acme/services/billing-v2 types=api_key \
      base_urls=https://billing.internal.example verify=@verify.json
  vault write orgs/acme/services/keycloak types=oauth2 base_urls=https://id.example \
      oauth='{"discovery_url": "https://id.example/realms/acme/.well-known/openid-configuration"}'

With discovery_url, the provider's metadata fills auth_url, token_url,
userinfo_url, issuer, revoke_url (RFC 7009), pkce when it offers S256,
iss_required when it sends RFC 9207's iss, and token_auth_method
client_secret_basic when it does not take client_secret_post. Fields given
win over discovered ones; the document is read once, when the service is
written.
`

// boundFields are the parts of a service that decide where its secrets go
// and how: its URLs, injection, OAuth endpoints and verify call.
type boundFields struct {
	BaseURLs  []string             `json:"base_urls"`
	Injection map[string]injection `json:"injection"`
	OAuth     *oauthSpec           `json:"oauth"`
	Verify    *verifyCall          `json:"verify"`
}

func boundFieldsOf(svc *service) []byte {
	raw, _ := json.Marshal(boundFields{svc.BaseURLs, svc.Injection, svc.OAuth, svc.Verify})
	return raw
}

// checkBoundFields refuses a change to the bound fields of a custom
// service while credentials or apps use it: the secrets written under it
// were given for those URLs, and an org admin, who may change services
// but never read a secret, could otherwise send them to a host of their
// own. A new service (or deleting the users first) is the way to move.
func (b *backend) checkBoundFields(ctx context.Context, s logical.Storage, name string, svc *service, users []string) error {
	old, err := b.getService(ctx, s, name)
	if err != nil || old == nil || bytes.Equal(boundFieldsOf(old), boundFieldsOf(svc)) {
		return err
	}
	apps, err := s.List(ctx, appStoragePrefix)
	if err != nil {
		return fmt.Errorf("listing apps: %w", err)
	}
	for _, a := range apps {
		app, err := getApp(ctx, s, a)
		if err != nil {
			return err
		}
		if app != nil && app.Service == name {
			users = append(users, "app "+a)
		}
	}
	if len(users) == 0 {
		return nil
	}
	sort.Strings(users)
	if len(users) > 5 {
		users = append(users[:5], fmt.Sprintf("%d more", len(users)-5))
	}
	return userErrorf("service %q is in use (%s): its base_urls, injection, oauth and verify are bound to the secrets stored under it and cannot change; "+
		"define a new service and write the secrets again under it, or delete these first", name, strings.Join(users, ", "))
}
