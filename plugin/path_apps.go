package credentials

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/plugin/provider"
	"github.com/clankteam/credentials/plugin/store"
)

const appStoragePrefix = "apps/"

// oauthApp is an OAuth client registration with a provider.
type oauthApp struct {
	Name     string `json:"name"`
	Service  string `json:"service"`
	ClientID string `json:"client_id"`
	// ClientSecret is write-only.
	ClientSecret string   `json:"client_secret,omitempty"`
	Scopes       []string `json:"scopes,omitempty"`
	Description  string   `json:"description,omitempty"`
	// Grant is how its credentials get tokens: the authorization code
	// (""; a person connects) or client_credentials (app-only tokens,
	// minted on use).
	Grant string `json:"grant,omitempty"`
	// Public: its client has no secret (registered as a public client, or
	// by the portal's client ID metadata document).
	Public bool `json:"public,omitempty"`
}

// Grants an app may use.
const (
	grantAuthorizationCode = "authorization_code"
	grantClientCredentials = "client_credentials"
)

func (a *oauthApp) grant() string {
	if a.Grant == "" {
		return grantAuthorizationCode
	}
	return a.Grant
}

// client is the app as the provider package knows it.
func (a *oauthApp) client() provider.App {
	return provider.App{ClientID: a.ClientID, ClientSecret: a.ClientSecret, Public: a.Public}
}

func getApp(ctx context.Context, s logical.Storage, name string) (*oauthApp, error) {
	return store.ReadJSON[oauthApp](ctx, s, appStoragePrefix+name, "app "+name)
}

func pathApps(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "apps/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "credentials",
				OperationSuffix: "apps",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback: b.pathAppsList,
					Summary:  "List OAuth client registrations with their service, client_id and scopes.",
				},
			},
			HelpSynopsis:    pathAppsHelpSyn,
			HelpDescription: pathAppsHelpDesc,
		},
		{
			Pattern: "apps/" + credNameSegment("name") + "$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "credentials",
				OperationSuffix: "app",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of the registration: 1-128 lowercase letters, digits, '-', '_' or '.'. Example: vault write orgs/acme/apps/google-workspace service=google client_id=... (the name is in the path)",
					Required:    true,
				},
				"service": {
					Type:        framework.TypeString,
					Description: "The catalog service (taking oauth2) the client is registered with. Example: service=google",
				},
				"client_id": {
					Type:        framework.TypeString,
					Description: "The OAuth client ID. Example: client_id=1234-abc.apps.googleusercontent.com",
				},
				"client_secret": {
					Type:         framework.TypeString,
					Description:  "The OAuth client secret. Write-only. Example: client_secret=GOCSPX-abc123",
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
				},
				"scopes": {
					Type:        framework.TypeCommaStringSlice,
					Description: "Scopes to request; default the service's default scopes. A name of one of the service's scope_sets (e.g. gmail) stands for its scopes. Example: scopes=gmail,calendar",
				},
				"description": {
					Type:        framework.TypeString,
					Description: "What the registration is for. Example: description='Workspace mail and calendar for the support agents'",
				},
				"register": {
					Type:        framework.TypeBool,
					Description: "Get the app's client from the service's authorization server instead of giving client_id and client_secret: where it takes client ID metadata documents (CIMD, found by a service's mcp_url) and config client_metadata_url is set, the client ID is that URL, the portal's document, and nothing is registered; else the app is registered at the RFC 7591 endpoint (oauth.registration_url) and the server's answer kept. Needs config redirect_url, the redirect URI. Only when the app is created. Example: vault write orgs/acme/apps/linear-mcp service=linear-mcp register=true",
				},
				"grant": {
					Type:          framework.TypeString,
					Description:   "How the app's credentials get tokens, set when the app is created: authorization_code (a person connects each credential) or client_credentials (app-only access, as Microsoft Graph, Linear and Spotify offer: tokens are minted on use with the client's own credentials and cached until shortly before they expire; nothing to connect). Example: grant=client_credentials",
					Default:       grantAuthorizationCode,
					AllowedValues: []interface{}{grantAuthorizationCode, grantClientCredentials},
				},
			},
			ExistenceCheck: b.appExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{Callback: b.pathAppWrite, Summary: "Register an OAuth client."},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathAppWrite, Summary: "Change an OAuth client registration."},
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathAppRead, Summary: "Read a registration (never the client secret)."},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathAppDelete, Summary: "Delete a registration no credential uses."},
			},
			HelpSynopsis:    pathAppsHelpSyn,
			HelpDescription: pathAppsHelpDesc,
		},
	}
}

func (b *backend) appExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	a, err := getApp(ctx, req.Storage, d.Get("name").(string))
	return a != nil, err
}

func (b *backend) pathAppsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, appStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing apps: %w", err)
	}
	// An org registers a handful of OAuth clients, so describing each one
	// here saves callers a read per app.
	keys := make([]string, 0, len(names))
	keyInfo := map[string]interface{}{}
	for _, name := range names {
		a, err := getApp(ctx, req.Storage, name)
		if err != nil {
			return nil, err
		}
		if a == nil {
			continue // deleted since the listing
		}
		keys = append(keys, name)
		keyInfo[name] = appResponse(a).Data
	}
	return logical.ListResponseWithInfo(keys, keyInfo), nil
}

func (b *backend) pathAppWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if !contract.ValidCredName(name) {
		return nil, userErrorMsg(contract.AppNameRule)
	}
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	// Registration is a call to the authorization server, made before the
	// lock is taken.
	var reg *provider.Registration
	if d.Get("register").(bool) {
		var err error
		if reg, err = b.registerApp(ctx, req, d, name); err != nil {
			return nil, err
		}
	}
	b.refsMu.Lock()
	defer b.refsMu.Unlock()

	a, err := getApp(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	creating := a == nil
	if creating {
		a = &oauthApp{Name: name}
	}
	if reg != nil {
		if !creating {
			return nil, userErrorf("app %q exists: register=true only creates an app", name)
		}
		a.ClientID, a.ClientSecret = reg.ClientID, reg.ClientSecret
		a.Public = reg.AuthMethod == provider.AuthNone
	}
	if v, ok := d.GetOk("service"); ok {
		if !creating && v.(string) != a.Service {
			return nil, userErrorf("service cannot change (app %q is for %s)", name, a.Service)
		}
		a.Service = v.(string)
	}
	if a.Service == "" {
		return nil, userErrorf("service is required")
	}
	svc, err := b.getService(ctx, req.Storage, a.Service)
	if err != nil {
		return nil, err
	}
	if svc == nil {
		return nil, userErrorf("unknown service %q: see services/ for the catalog", a.Service)
	}
	if !svc.Takes(typeOAuth2) {
		return nil, userErrorf("service %s does not take oauth2 credentials", a.Service)
	}
	if err := applyAppFields(d, svc, a, creating); err != nil {
		return nil, err
	}
	entry, err := logical.StorageEntryJSON(appStoragePrefix+name, a)
	if err != nil {
		return nil, fmt.Errorf("encoding app: %w", err)
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("storing app: %w", err)
	}
	return appResponse(a), nil
}

// registerApp registers app name of the request's service at the service's
// RFC 7591 endpoint, with the engine's redirect URL.
func (b *backend) registerApp(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*provider.Registration, error) {
	for _, f := range []string{"client_id", "client_secret"} {
		if _, ok := d.GetOk(f); ok {
			return nil, userErrorf("register=true and %s: a registered app's client is the authorization server's answer", f)
		}
	}
	existing, err := getApp(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		return nil, userErrorf("app %q exists: register=true only creates an app", name)
	}
	svcName, _ := d.Get("service").(string)
	svc, err := b.getService(ctx, req.Storage, svcName)
	if err != nil {
		return nil, err
	}
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if svc != nil && svc.OAuth != nil && svc.OAuth.CIMD && cfg.ClientMetadataURL != "" {
		// The authorization server reads the portal's document when the
		// client first asks; nothing is registered.
		b.logger.Info("app uses the portal's client ID metadata document", "app", name, "service", svcName)
		return &provider.Registration{ClientID: cfg.ClientMetadataURL, AuthMethod: provider.AuthNone}, nil
	}
	if svc == nil || svc.OAuth == nil || svc.OAuth.RegistrationURL == "" {
		return nil, userErrorf("register=true needs a service whose authorization server takes client ID metadata documents (with config client_metadata_url set) or offers RFC 7591 registration (oauth.registration_url); a remote MCP server's service, written with mcp_url, has what discovery found")
	}
	if cfg.RedirectURL == "" {
		return nil, userErrorf("redirect_url is not configured: write the portal's OAuth callback URL to config first; it is the registered redirect URI")
	}
	reg, pe := b.oauth.provider.Register(ctx, svc.OAuth.RegistrationURL, "Credentials: "+name, cfg.RedirectURL, svc.OAuth.TokenAuthMethod)
	if pe != nil {
		return nil, userErrorf("registering app %s: %s", name, pe.Msg)
	}
	b.logger.Info("app registered", "app", name, "service", svcName, "client_id", reg.ClientID)
	return reg, nil
}

// applyAppFields checks the request's fields of app a of service svc and
// copies them into a.
func applyAppFields(d *framework.FieldData, svc *service, a *oauthApp, creating bool) error {
	if v, ok := d.GetOk("grant"); ok {
		g := v.(string)
		if g == grantAuthorizationCode {
			g = ""
		}
		switch {
		case g != "" && g != grantClientCredentials:
			return userErrorf("grant must be authorization_code or client_credentials")
		case !creating && g != a.Grant:
			return userErrorf("grant cannot change (app %q's credentials were made for it): register another app", a.Name)
		}
		a.Grant = g
	}
	if v, ok := d.GetOk("client_id"); ok {
		a.ClientID = v.(string)
	}
	if a.ClientID == "" || len(a.ClientID) > 512 || hasControl(a.ClientID) {
		return userErrorf("client_id is required: 1-512 characters without control characters")
	}
	if v, ok := d.GetOk("client_secret"); ok {
		sec := v.(string)
		if len(sec) > 4096 || hasControl(sec) {
			return userErrorf("client_secret must be at most 4096 characters without control characters")
		}
		a.ClientSecret = sec
	}
	switch {
	case a.Grant == grantClientCredentials && svc.OAuth != nil && svc.OAuth.Public():
		return userErrorf("the client credentials grant needs a confidential client, and service %s's clients are public", a.Service)
	case svc.OAuth != nil && svc.OAuth.Public() && a.ClientSecret != "":
		return userErrorf("service %s's clients are public (token_auth_method none, with PKCE): an app of it has no client_secret", a.Service)
	case creating && a.ClientSecret == "" && !a.Public && (svc.OAuth == nil || !svc.OAuth.Public()):
		return userErrorf("client_secret is required (a public client, without one, needs a service with token_auth_method none and pkce)")
	}
	if v, ok := d.GetOk("scopes"); ok {
		scopes, err := expandScopes(svc, v.([]string))
		if err != nil {
			return err
		}
		a.Scopes = scopes
	}
	if v, ok := d.GetOk("description"); ok {
		if len(v.(string)) > maxDescLen || hasControl(v.(string)) {
			return userErrorf("description must be at most %d characters without control characters", maxDescLen)
		}
		a.Description = v.(string)
	}
	return nil
}

// expandScopes replaces names of the service's scope sets by their scopes
// and drops duplicates.
func expandScopes(svc *service, in []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.ContainsAny(s, " \t\r\n") {
			return nil, userErrorf("scopes must not contain spaces: separate them with commas")
		}
		expanded := []string{s}
		if svc.OAuth != nil {
			if set, ok := svc.OAuth.ScopeSets[s]; ok {
				expanded = set
			}
		}
		for _, e := range expanded {
			if !seen[e] {
				seen[e] = true
				out = append(out, e)
			}
		}
	}
	return out, nil
}

func appResponse(a *oauthApp) *logical.Response {
	return &logical.Response{Data: map[string]interface{}{
		"name":              a.Name,
		"service":           a.Service,
		"client_id":         a.ClientID,
		"client_secret_set": a.ClientSecret != "",
		"scopes":            a.Scopes,
		"description":       a.Description,
		"grant":             a.grant(),
		"public":            a.Public,
	}}
}

func (b *backend) pathAppRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	a, err := getApp(ctx, req.Storage, d.Get("name").(string))
	if err != nil || a == nil {
		return nil, err
	}
	return appResponse(a), nil
}

func (b *backend) pathAppDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	b.refsMu.Lock()
	defer b.refsMu.Unlock()
	lines, err := b.index.Lines(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	var users []string
	for _, l := range lines {
		if l.App == name {
			users = append(users, l.Name)
		}
	}
	if len(users) > 0 {
		return nil, userErrorf("app %q is used by %d credential(s) (%s): delete them first", name, len(users), strings.Join(firstN(users, 5), ", "))
	}
	if err := req.Storage.Delete(ctx, appStoragePrefix+name); err != nil {
		return nil, fmt.Errorf("deleting app: %w", err)
	}
	return nil, nil
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

const pathAppsHelpSyn = `Register OAuth clients (apps) that oauth2 credentials connect through.`

const pathAppsHelpDesc = `
An app is the client registration an organization made with an OAuth provider:
the service, its client_id and client_secret (write-only, never returned) and
the scopes to request. Scope-set names of the service (google: gmail, drive,
calendar, ads) expand to their scopes. An oauth2 credential names its app.

  vault write orgs/acme/apps/google-workspace service=google \
      client_id=... client_secret=... scopes=gmail,calendar
`
