package credentials

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/plugin/provider"
	"github.com/clankteam/credentials/testing/oauthserver"
	"github.com/clankteam/credentials/testing/remotemcp"
)

func TestCatalogPresets(t *testing.T) {
	b, s, _ := getTestBackend(t)
	resp := mustOK(t, do(t, b, s, logical.ListOperation, "services/", nil))
	keys := strings.Join(resp.Data["keys"].([]string), " ")
	for _, want := range []string{"anthropic", "discord", "gcp-service-account", "github", "google", "linear", "microsoft", "openai", "slack", "smtp", "stripe"} {
		if !strings.Contains(keys, want) {
			t.Errorf("catalog lacks %s: %s", want, keys)
		}
	}
	g := mustOK(t, do(t, b, s, logical.ReadOperation, "services/google", nil))
	oauth := g.Data["oauth"].(map[string]interface{})
	if oauth["pkce"] != true || oauth["auth_params"].(map[string]interface{})["access_type"] != "offline" {
		t.Errorf("google oauth = %v", oauth)
	}
	if _, ok := oauth["scope_sets"].(map[string]interface{})["gmail"]; !ok {
		t.Errorf("google has no gmail scope set")
	}
	a := mustOK(t, do(t, b, s, logical.ReadOperation, "services/anthropic", nil))
	inj := a.Data["injection"].(map[string]interface{})["api_key"].(map[string]interface{})
	if inj["header"] != "X-Api-Key" || inj["headers"].(map[string]interface{})["Anthropic-Version"] == "" {
		t.Errorf("anthropic injection = %v", inj)
	}
}

func TestPresetsCannotBeChanged(t *testing.T) {
	b, s, _ := getTestBackend(t)
	for _, op := range []logical.Operation{logical.UpdateOperation, logical.DeleteOperation} {
		resp := do(t, b, s, op, "services/stripe", map[string]interface{}{"types": "api_key", "base_urls": "https://evil.example"})
		if !resp.IsError() || !strings.Contains(resp.Error().Error(), "built in") {
			t.Errorf("%s services/stripe: %v", op, resp)
		}
	}
	g := mustOK(t, do(t, b, s, logical.ReadOperation, "services/stripe", nil))
	if urls := g.Data["base_urls"].([]interface{}); urls[0] != "https://api.stripe.com" {
		t.Errorf("stripe base_urls changed: %v", urls)
	}
}

func TestCustomService(t *testing.T) {
	b, s, _ := getTestBackend(t)
	good := map[string]interface{}{
		"types":     "api_key",
		"base_urls": "https://billing.internal.example/api",
		"injection": map[string]interface{}{"api_key": map[string]interface{}{"style": "header", "header": "X-Api-Key", "format": "{secret}"}},
	}
	mustOK(t, do(t, b, s, logical.CreateOperation, "services/billing", good))
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/billing-key", map[string]interface{}{"type": "api_key", "service": "billing", "api_key": canaryKey}))

	bad := []struct {
		desc string
		data map[string]interface{}
		want string
	}{
		{"no types", map[string]interface{}{"base_urls": "https://x.example"}, "types must name"},
		{"unknown type", map[string]interface{}{"types": "cookie"}, "unknown credential type"},
		{"relative base url", map[string]interface{}{"types": "api_key", "base_urls": "/api"}, "base_urls"},
		{"inner wildcard", map[string]interface{}{"types": "api_key", "base_urls": "https://a.*.example"}, "wildcard"},
		{"bad injection style", map[string]interface{}{"types": "api_key", "injection": map[string]interface{}{"api_key": map[string]interface{}{"style": "cookie"}}}, "style must be"},
		{"body without field", map[string]interface{}{"types": "api_key", "injection": map[string]interface{}{"api_key": map[string]interface{}{"style": "body"}}}, "style body needs field"},
		{"body for a password", map[string]interface{}{"types": "password", "injection": map[string]interface{}{"password": map[string]interface{}{"style": "body", "field": "pw"}}}, "one secret"},
		{"misspelt nested key", map[string]interface{}{"types": "api_key", "injection": map[string]interface{}{"api_key": map[string]interface{}{"style": "header", "hedaer": "X"}}}, "unknown field"},
		{"oauth2 without endpoints", map[string]interface{}{"types": "oauth2"}, "auth_url"},
		{"unknown field", map[string]interface{}{"types": "api_key", "colour": "red"}, "unknown field(s): colour"},
	}
	for _, tc := range bad {
		t.Run(tc.desc, func(t *testing.T) {
			resp := do(t, b, s, logical.UpdateOperation, "services/other", tc.data)
			if !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want) {
				t.Fatalf("got %v, want a 400 mentioning %q", resp, tc.want)
			}
			if got := do(t, b, s, logical.ReadOperation, "services/other", nil); got != nil {
				t.Fatalf("a refused service was stored")
			}
		})
	}

	// A service in use can neither drop the type its credentials have nor
	// be deleted.
	resp := do(t, b, s, logical.UpdateOperation, "services/billing", map[string]interface{}{"types": "password"})
	if !resp.IsError() || !strings.Contains(resp.Error().Error(), "billing-key") {
		t.Errorf("dropping a used type: %v", resp)
	}
	resp = do(t, b, s, logical.DeleteOperation, "services/billing", nil)
	if !resp.IsError() || !strings.Contains(resp.Error().Error(), "used by") {
		t.Errorf("deleting a used service: %v", resp)
	}
	do(t, b, s, logical.DeleteOperation, "creds/billing-key", nil)
	mustOK(t, do(t, b, s, logical.DeleteOperation, "services/billing", nil))
}

func TestApps(t *testing.T) {
	b, s, _ := getTestBackend(t)
	writeGoogleApp(t, b, s)
	resp := mustOK(t, do(t, b, s, logical.ReadOperation, "apps/google-app", nil))
	if _, ok := resp.Data["client_secret"]; ok {
		t.Fatal("read returned the client secret")
	}
	scopes := strings.Join(resp.Data["scopes"].([]string), " ")
	if scopes != "https://www.googleapis.com/auth/gmail.modify https://www.googleapis.com/auth/calendar" {
		t.Errorf("scope sets not expanded: %s", scopes)
	}
	for _, tc := range []struct {
		desc string
		data map[string]interface{}
		want string
	}{
		{"service without oauth2", map[string]interface{}{"service": "stripe", "client_id": "x", "client_secret": "y"}, "does not take oauth2"},
		{"no client id", map[string]interface{}{"service": "github", "client_secret": "y"}, "client_id is required"},
		{"no client secret", map[string]interface{}{"service": "github", "client_id": "x"}, "client_secret is required"},
		{"unknown service", map[string]interface{}{"service": "nope", "client_id": "x", "client_secret": "y"}, "unknown service"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			resp := do(t, b, s, logical.CreateOperation, "apps/new", tc.data)
			if !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want) {
				t.Fatalf("got %v, want %q", resp, tc.want)
			}
		})
	}
	list := mustOK(t, do(t, b, s, logical.ListOperation, "apps/", nil))
	info := list.Data["key_info"].(map[string]interface{})["google-app"].(map[string]interface{})
	if info["service"] != "google" || info["client_id"] != "cid" || info["client_secret_set"] != true {
		t.Errorf("LIST apps/ key_info = %v", info)
	}
	if _, ok := info["client_secret"]; ok {
		t.Fatal("LIST apps/ returned the client secret")
	}
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/gmail", map[string]interface{}{"type": "oauth2", "service": "google", "app": "google-app"}))
	resp = do(t, b, s, logical.DeleteOperation, "apps/google-app", nil)
	if !resp.IsError() || !strings.Contains(resp.Error().Error(), "gmail") {
		t.Fatalf("deleting a used app: %v", resp)
	}
}

func TestConfig(t *testing.T) {
	b, s, _ := getTestBackend(t)
	for _, tc := range []struct {
		data map[string]interface{}
		want string
	}{
		{map[string]interface{}{"redirect_url": "ftp://x"}, "redirect_url"},
		{map[string]interface{}{"refresh_ahead": -5}, "refresh_ahead"},
		{map[string]interface{}{"refresh_ahead": 0}, "refresh_ahead must be a positive"},
		{map[string]interface{}{"broker_max_body": 0}, "broker_max_body"},
		{map[string]interface{}{"colour": "red"}, "unknown field"},
	} {
		resp := do(t, b, s, logical.UpdateOperation, "config", tc.data)
		if !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want) {
			t.Errorf("config %v: %v, want %q", tc.data, resp, tc.want)
		}
	}
	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"warn_before": "48h"}))
	resp := mustOK(t, do(t, b, s, logical.ReadOperation, "config", nil))
	if resp.Data["warn_before"] != int64(48*3600) || resp.Data["refresh_ahead"] != int64(600) {
		t.Errorf("config = %v", resp.Data)
	}
}

// TestServiceInUseKeepsItsBoundFields: an org admin cannot re-point a
// service its credentials or apps use (before, the stored API key, then
// the refresh token and client secret, went to the admin's own host).
func TestServiceInUseKeepsItsBoundFields(t *testing.T) {
	b, s, _ := getTestBackend(t)
	def := map[string]interface{}{"types": "api_key,oauth2", "base_urls": "https://api.billing.example",
		"oauth": map[string]interface{}{"auth_url": "https://id.billing.example/auth", "token_url": "https://id.billing.example/token"}}
	mustOK(t, do(t, b, s, logical.CreateOperation, "services/billing", def))
	// Unused, it may change freely.
	def["base_urls"] = "https://api2.billing.example"
	mustOK(t, do(t, b, s, logical.UpdateOperation, "services/billing", def))
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/billing-key", map[string]interface{}{"type": "api_key", "service": "billing", "api_key": "sk_live_0123456789abcdef"}))

	for field, value := range map[string]interface{}{
		"base_urls": "https://attacker.example",
		"injection": map[string]interface{}{"api_key": map[string]interface{}{"style": "query", "query": "k"}},
		"oauth":     map[string]interface{}{"auth_url": "https://id.billing.example/auth", "token_url": "https://attacker.example/token"},
		"verify":    map[string]interface{}{"method": "GET", "url": "https://attacker.example/", "expect_status": 200},
	} {
		changed := map[string]interface{}{}
		for k, v := range def {
			changed[k] = v
		}
		changed[field] = value
		resp := do(t, b, s, logical.UpdateOperation, "services/billing", changed)
		if !resp.IsError() || !strings.Contains(resp.Error().Error(), "credential billing-key") {
			t.Errorf("changing %s in use: %v", field, resp)
		}
	}
	got := mustOK(t, do(t, b, s, logical.ReadOperation, "services/billing", nil))
	if urls := got.Data["base_urls"].([]interface{}); len(urls) != 1 || urls[0] != "https://api2.billing.example" {
		t.Errorf("base_urls = %v", urls)
	}
	// What does not decide where secrets go may still change.
	def["display_name"] = "Billing (EU)"
	mustOK(t, do(t, b, s, logical.UpdateOperation, "services/billing", def))

	// An app counts as a user too.
	mustOK(t, do(t, b, s, logical.DeleteOperation, "creds/billing-key", nil))
	mustOK(t, do(t, b, s, logical.CreateOperation, "apps/billing-app", map[string]interface{}{"service": "billing", "client_id": "cid", "client_secret": "cs-0123456789"}))
	def["base_urls"] = "https://attacker.example"
	if resp := do(t, b, s, logical.UpdateOperation, "services/billing", def); !resp.IsError() || !strings.Contains(resp.Error().Error(), "app billing-app") {
		t.Errorf("changing a service an app uses: %v", resp)
	}
}

// rewriteServiceInUse replaces the definition of a service that
// credentials use, which the API refuses: tests of a provider that changes
// its behaviour under existing grants use it, as an operator's storage
// change would. The definition is parsed and checked by the API (under a
// scratch name) exactly as any other.
func rewriteServiceInUse(tb testing.TB, b *backend, s logical.Storage, name string, data map[string]interface{}) {
	tb.Helper()
	ctx := context.Background()
	scratch := "scratch-" + name
	mustOK(tb, do(tb, b, s, logical.CreateOperation, "services/"+scratch, data))
	svc, err := b.getService(ctx, s, scratch)
	if err != nil || svc == nil {
		tb.Fatalf("reading the scratch service: %v", err)
	}
	svc.Name = name
	entry, err := logical.StorageEntryJSON(serviceStoragePrefix+name, svc)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Put(ctx, entry); err != nil {
		tb.Fatal(err)
	}
	mustOK(tb, do(tb, b, s, logical.DeleteOperation, "services/"+scratch, nil))
	b.invalidate(ctx, serviceStoragePrefix+name)
}

// TestCatalogEntriesAreComplete: at least 25 presets, each saying what the
// service is and where its docs are, every OAuth one its revocation style,
// and every one a way to verify a credential except SMTP (verified by
// logging in) and the GCP key (verified by minting).
func TestCatalogEntriesAreComplete(t *testing.T) {
	if n := len(builtinServices); n < 25 {
		t.Fatalf("%d presets, want at least 25", n)
	}
	for _, want := range []string{"notion", "atlassian", "hubspot", "salesforce", "dropbox", "box", "zoom", "asana", "gitlab", "figma", "airtable", "twilio", "sendgrid", "mailgun", "github-app"} {
		if builtinServices[want] == nil {
			t.Errorf("no preset %s", want)
		}
	}
	for name, svc := range builtinServices {
		if svc.Description == "" {
			t.Errorf("%s has no description", name)
		}
		if svc.DocsURL == "" && name != "smtp" {
			t.Errorf("%s has no docs_url", name)
		}
		if svc.OAuth != nil && svc.Takes(typeOAuth2) && svc.OAuth.RevokeStyle == "" {
			t.Errorf("%s does not say how grants are revoked", name)
		}
		if svc.Verify == nil && name != "smtp" && name != "gcp-service-account" {
			t.Errorf("%s has no verify call", name)
		}
	}
}

// TestRemoteMCPService: a service written with only a remote MCP server's
// URL gets its OAuth from the server's authorization discovery (the fosite
// test server, behind a go-sdk MCP server), and an app of it is registered
// there by RFC 7591. What discovery or registration refuses is a 400 and
// stores nothing.
func TestRemoteMCPService(t *testing.T) {
	b, s, _ := getTestBackend(t)
	as, remote := remotemcp.StartForTest(t, oauthserver.Options{})

	mustOK(t, do(t, b, s, logical.CreateOperation, "services/remote", map[string]interface{}{"types": "oauth2", "mcp_url": remote.MCPURL()}))
	got := mustOK(t, do(t, b, s, logical.ReadOperation, "services/remote", nil)).Data
	o := got["oauth"].(map[string]interface{})
	if o["resource"] != remote.MCPURL() || o["issuer"] != as.Issuer() || o["token_url"] != as.TokenURL() ||
		o["registration_url"] != as.RegisterURL() || o["pkce"] != true || got["mcp_url"] != remote.MCPURL() {
		t.Fatalf("the service's oauth from discovery: %v", got)
	}
	if bases := got["base_urls"].([]interface{}); len(bases) != 1 || bases[0] != remote.MCPURL() {
		t.Errorf("base_urls = %v, want the MCP server's URL", bases)
	}

	for _, tc := range []struct {
		desc string
		data map[string]interface{}
		want string
	}{
		{"no metadata", map[string]interface{}{"types": "oauth2", "mcp_url": as.URL() + "/mcp"}, "protected-resource metadata"},
		{"not oauth2", map[string]interface{}{"types": "api_key", "mcp_url": remote.MCPURL()}, "taking oauth2"},
		{"outside base_urls", map[string]interface{}{"types": "oauth2", "mcp_url": remote.MCPURL(), "base_urls": "https://elsewhere.example"}, "under none of base_urls"},
		{"not a url", map[string]interface{}{"types": "oauth2", "mcp_url": "mcp.example.com"}, "http(s) URL"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			resp := do(t, b, s, logical.CreateOperation, "services/bad-remote", tc.data)
			if !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want) {
				t.Fatalf("got %v, want a 400 saying %q", resp, tc.want)
			}
			if do(t, b, s, logical.ReadOperation, "services/bad-remote", nil) != nil {
				t.Fatal("a refused service was stored")
			}
		})
	}

	// Registration takes the engine's redirect URL.
	resp := do(t, b, s, logical.CreateOperation, "apps/remote-app", map[string]interface{}{"service": "remote", "register": true})
	if !resp.IsError() || !strings.Contains(resp.Error().Error(), "redirect_url") {
		t.Fatalf("registering without redirect_url: %v", resp)
	}
	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"redirect_url": "https://portal.example/oauth/callback"}))
	app := mustOK(t, do(t, b, s, logical.CreateOperation, "apps/remote-app", map[string]interface{}{"service": "remote", "register": true})).Data
	if app["client_id"] == "" || app["client_secret_set"] != true || as.Registrations() != 1 {
		t.Fatalf("registered app %v, %d registrations", app, as.Registrations())
	}
	if _, ok := app["client_secret"]; ok {
		t.Fatal("the registered app's answer holds its secret")
	}
	for desc, data := range map[string]map[string]interface{}{
		"again":                    {"service": "remote", "register": true},
		"with client_id":           {"service": "remote", "register": true, "client_id": "x"},
		"no registration endpoint": {"service": "github", "register": true},
	} {
		name := "remote-app"
		if desc != "again" {
			name = "other-app"
		}
		if resp := do(t, b, s, logical.CreateOperation, "apps/"+name, data); !resp.IsError() {
			t.Errorf("register %s: %v, want a 400", desc, resp)
		}
	}
	if as.Registrations() != 1 {
		t.Errorf("refused registrations reached the server: %d", as.Registrations())
	}
}

// TestServiceFromAPresetsMCPServer: the presets with a remote MCP server
// name it (mcp_server), and an org adds it as a service of its own with
// mcp_from=<preset>: the server's URL is the preset's, its OAuth found by
// discovery as for any mcp_url. What cannot be is a 400 and stores nothing.
func TestServiceFromAPresetsMCPServer(t *testing.T) {
	b, s, _ := getTestBackend(t)
	idp := provider.NewFake()
	idp.MCP = &provider.MCPServer{
		Resource: "https://mcp.linear.app/mcp",
		Auth: provider.Discovery{Issuer: "https://mcp.linear.app", AuthURL: "https://mcp.linear.app/authorize",
			TokenURL: "https://mcp.linear.app/token", S256: true},
		RegistrationURL: "https://mcp.linear.app/register",
	}
	b.oauth.provider = idp

	preset := mustOK(t, do(t, b, s, logical.ReadOperation, "services/linear", nil)).Data
	if preset["mcp_server"] != "https://mcp.linear.app/mcp" {
		t.Fatalf("preset linear's mcp_server = %v", preset["mcp_server"])
	}
	mustOK(t, do(t, b, s, logical.CreateOperation, "services/linear-mcp", map[string]interface{}{"mcp_from": "linear"}))
	got := mustOK(t, do(t, b, s, logical.ReadOperation, "services/linear-mcp", nil)).Data
	o := got["oauth"].(map[string]interface{})
	if got["mcp_url"] != "https://mcp.linear.app/mcp" || got["display_name"] != "Linear MCP" ||
		o["token_url"] != "https://mcp.linear.app/token" || o["registration_url"] != "https://mcp.linear.app/register" ||
		fmt.Sprint(got["types"]) != "[oauth2]" || got["builtin"] != false {
		t.Fatalf("the service from linear's MCP server: %v", got)
	}
	if got["mcp_server"] != nil {
		t.Errorf("an org's service has mcp_server %v: only presets name one", got["mcp_server"])
	}

	for _, tc := range []struct {
		desc string
		data map[string]interface{}
		want string
	}{
		{"no such preset", map[string]interface{}{"mcp_from": "nope"}, "no preset"},
		{"a preset without one", map[string]interface{}{"mcp_from": "openai"}, "has no remote MCP server"},
		{"with mcp_url", map[string]interface{}{"mcp_from": "linear", "mcp_url": "https://other.example/mcp"}, "not both"},
		{"not oauth2", map[string]interface{}{"mcp_from": "linear", "types": "api_key"}, "taking oauth2"},
		{"mcp_server", map[string]interface{}{"types": "oauth2", "mcp_server": "https://mcp.linear.app/mcp"}, "unknown field"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			resp := do(t, b, s, logical.CreateOperation, "services/bad-from", tc.data)
			if !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want) {
				t.Fatalf("got %v, want a 400 saying %q", resp, tc.want)
			}
			if do(t, b, s, logical.ReadOperation, "services/bad-from", nil) != nil {
				t.Fatal("a refused service was stored")
			}
		})
	}
}
