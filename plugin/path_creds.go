package credentials

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	maxAPIKeyLen   = 8 << 10
	maxPasswordLen = 4 << 10
	maxDescLen     = 1024
	maxListLimit   = 10000
)

// credFields are creds/<name>'s fields. Secret ones are marked Sensitive so
// that UIs mask them; Vault's audit log HMACs every string value anyway.
// Long on purpose: a declaration (fields and operations), read top to bottom.
func credFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name": {
			Type:        framework.TypeString,
			Description: "Name of the credential: 1-128 lowercase letters, digits, '-', '_' or '.'. Example: vault write orgs/acme/creds/stripe-live ... (the name is in the path)",
			Required:    true,
		},
		"type": {
			Type:          framework.TypeString,
			Description:   "Credential type: oauth2, api_key, password or file. Cannot change after creation. Example: type=api_key",
			AllowedValues: []interface{}{typeOAuth2, typeAPIKey, typePassword, typeFile},
		},
		"service": {
			Type:        framework.TypeString,
			Description: "Service from the catalog (services/), e.g. stripe, github, smtp. Cannot change after creation. Example: service=stripe",
		},
		"description": {
			Type:        framework.TypeString,
			Description: "What the credential is for, shown to people. Example: description='Stripe live key for the billing agent'",
		},
		"api_key": {
			Type:         framework.TypeString,
			Description:  "The API key (type api_key). Write-only. Example: api_key=sk_test_abc123",
			DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		},
		"username": {
			Type:        framework.TypeString,
			Description: "User name (type password). Example: username=alerts@acme.example",
		},
		"password": {
			Type:         framework.TypeString,
			Description:  "Password (type password). Write-only. Example: password=app-password-123",
			DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		},
		"host": {
			Type:        framework.TypeString,
			Description: "Server host name (type password; required for SMTP). Example: host=smtp.acme.example",
		},
		"port": {
			Type:        framework.TypeInt,
			Description: "Server port (type password; required for SMTP): 587 for STARTTLS, 465 for implicit TLS. Example: port=587",
		},
		"security": {
			Type:          framework.TypeString,
			Description:   "SMTP only: how the connection is protected before AUTH. starttls (upgrade a plain connection, port 587) or tls (TLS from the first byte, port 465). Default: tls on port 465, starttls on any other. There is no plain mode: the password never travels unprotected. Example: security=tls",
			AllowedValues: []interface{}{"starttls", "tls"},
		},
		"allowed_senders": {
			Type:        framework.TypeCommaStringSlice,
			Description: "SMTP only: the addresses (ops@acme.example) or domains (@acme.example) mail/<name> may send from. Empty: any sender the server accepts. Example: allowed_senders=ops@acme.example,@alerts.acme.example",
		},
		"file": {
			Type:         framework.TypeString,
			Description:  "File content, base64-encoded, at most 1 MiB decoded (type file). Write-only. Example: file=@<(base64 -w0 key.json)",
			DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		},
		"filename": {
			Type:        framework.TypeString,
			Description: "The file's name (type file). Example: filename=key.json",
		},
		"app_id": {
			Type:        framework.TypeString,
			Description: "GitHub App only (service github-app, whose file is the app's private key, PEM): the app's ID or client ID, the iss of its JWT. Example: app_id=123456",
		},
		"installation_id": {
			Type:        framework.TypeInt,
			Description: "GitHub App only: the installation whose 1-hour tokens the broker mints on use. Example: installation_id=987654",
		},
		"repositories": {
			Type:        framework.TypeCommaStringSlice,
			Description: "GitHub App only, optional: narrow the tokens to these repositories (names, without the owner). Example: repositories=api,web",
		},
		"permissions": {
			Type:        framework.TypeKVPairs,
			Description: `GitHub App only, optional: narrow the tokens to these permissions (read or write each), as pairs or a JSON object. Example: permissions=contents=read,issues=write or permissions='{"contents": "read"}'`,
		},
		"app": {
			Type:        framework.TypeString,
			Description: "OAuth client registration (apps/<name>) used to connect and refresh (type oauth2). Example: app=google-workspace",
		},
		"refresh_token": {
			Type:         framework.TypeString,
			Description:  "An existing refresh token to import instead of connecting (type oauth2). Write-only. Example: refresh_token=1//0gabc123",
			DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		},
		"expires_at": {
			Type:        framework.TypeString,
			Description: "When the credential stops working, RFC 3339 (e.g. 2027-01-31T00:00:00Z); empty clears it. Example: expires_at=2027-01-31T00:00:00Z",
		},
	}
}

// Long on purpose: a declaration (fields and operations), read top to bottom.
func pathCreds(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "creds/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "credentials",
				OperationSuffix: "creds",
			},
			Fields: map[string]*framework.FieldSchema{
				"type": {
					Type:        framework.TypeString,
					Description: "Only credentials of this type: oauth2, api_key, password or file. Example: type=oauth2, sent as a query parameter (?list=true&type=oauth2)",
					Query:       true,
				},
				"q": {
					Type:        framework.TypeString,
					Description: "Only credentials whose name contains this text (case-insensitive). Example: ?list=true&q=stripe",
					Query:       true,
				},
				"status": {
					Type:        framework.TypeString,
					Description: "Only credentials with this status: active, needs_attention, expired or disconnected. Example: ?list=true&status=needs_attention",
					Query:       true,
				},
				"after": {
					Type:        framework.TypeString,
					Description: "Page: only names after this one. Example: ?list=true&after=stripe-live",
					Query:       true,
				},
				"limit": {
					Type:        framework.TypeInt,
					Description: "Page: at most this many names (default and maximum 10000). Example: ?list=true&limit=100",
					Query:       true,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback: b.pathCredsList,
					Summary:  "List credentials with their type, service, status and last use.",
				},
			},
			HelpSynopsis:    pathCredsListHelpSyn,
			HelpDescription: pathCredsListHelpDesc,
		},
		{
			Pattern: "creds/" + credNameSegment("name") + "$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "credentials",
				OperationSuffix: "cred",
			},
			Fields:         credFields(),
			ExistenceCheck: b.credExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{
					Callback: b.pathCredCreate,
					// A provider may be called: on a performance standby, Vault
					// forwards this to the node that can store the answer.
					ForwardPerformanceStandby: true,
					Summary:                   "Store a new credential.",
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback: b.pathCredUpdate,
					// A provider may be called: on a performance standby, Vault
					// forwards this to the node that can store the answer.
					ForwardPerformanceStandby: true,
					Summary:                   "Replace a credential's secret or change its description or expiry.",
				},
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathCredRead,
					Summary:  "Read a credential's metadata (never its secret).",
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback: b.pathCredDelete,
					// A provider may be called: on a performance standby, Vault
					// forwards this to the node that can store the answer.
					ForwardPerformanceStandby: true,
					Summary:                   "Revoke the credential at its provider where possible, then delete it.",
				},
			},
			HelpSynopsis:    pathCredsHelpSyn,
			HelpDescription: pathCredsHelpDesc,
		},
	}
}

// credNameSegment matches one path segment; names are validated in the
// handlers so that a bad name gets a clear message instead of a 404.
func credNameSegment(field string) string {
	return "(?P<" + field + ">[^/]+)"
}

func (b *backend) credExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	c, err := getCredential(ctx, req.Storage, d.Get("name").(string))
	return c != nil, err
}

func (b *backend) credLock(name string) *locksutil.LockEntry {
	return locksutil.LockForKey(b.credLocks, name)
}

func (b *backend) pathCredCreate(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateCredName(name); err != nil {
		return nil, err
	}
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	// Shared hold on references: the app or custom service this
	// credential names cannot be deleted until it is stored.
	b.refsMu.RLock()
	defer b.refsMu.RUnlock()
	lock := b.credLock(name)
	lock.Lock()
	defer lock.Unlock()

	if existing, err := getCredential(ctx, req.Storage, name); err != nil {
		return nil, err
	} else if existing != nil {
		// Another writer created it between the existence check and the lock.
		return nil, userErrorf("credential %q already exists", name)
	}

	typ, _ := d.Get("type").(string)
	svcName, _ := d.Get("service").(string)
	if typ == "" || svcName == "" {
		return nil, userErrorf("type and service are required")
	}
	if !slices.Contains(credTypes, typ) {
		return nil, userErrorf("type must be one of %s, not %q", strings.Join(credTypes, ", "), typ)
	}
	svc, err := b.getService(ctx, req.Storage, svcName)
	if err != nil {
		return nil, err
	}
	if svc == nil {
		return nil, userErrorf("unknown service %q: see services/ for the catalog", svcName)
	}
	if !svc.Takes(typ) {
		return nil, userErrorf("service %s takes %s credentials, not %q", svcName, strings.Join(svc.Types, " or "), typ)
	}

	now := b.now().UTC()
	c := &credential{
		Name:      name,
		Type:      typ,
		Service:   svcName,
		State:     statusActive,
		CreatedAt: now,
		UpdatedAt: now,
		ID:        newCredentialID(),
	}
	if err := b.applyCredFields(ctx, req, d, svc, c, true); err != nil {
		return nil, err
	}
	if err := b.validateOAuthCred(ctx, req.Storage, svc, c); err != nil {
		return nil, err
	}
	if err := b.saveCredential(ctx, req.Storage, c); err != nil {
		return nil, err
	}
	b.logger.Info("credential created", "name", name, "type", typ, "service", svcName)
	return b.credResponse(ctx, req.Storage, c)
}

func (b *backend) pathCredUpdate(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateCredName(name); err != nil {
		return nil, err
	}
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	b.refsMu.RLock()
	defer b.refsMu.RUnlock()
	lock := b.credLock(name)
	lock.Lock()
	defer lock.Unlock()

	c, err := getCredential(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, userErrorf("credential %q does not exist", name)
	}
	if t, ok := d.GetOk("type"); ok && t.(string) != c.Type {
		return nil, userErrorf("type cannot change (credential %q is %s); delete and recreate it", name, c.Type)
	}
	if s, ok := d.GetOk("service"); ok && s.(string) != c.Service {
		return nil, userErrorf("service cannot change (credential %q is for %s); delete and recreate it", name, c.Service)
	}
	svc, err := b.getService(ctx, req.Storage, c.Service)
	if err != nil {
		return nil, err
	}
	if svc == nil {
		return nil, userErrorf("service %q of credential %q no longer exists", c.Service, name)
	}
	// An imported refresh token replaces the grant: the replaced one is
	// revoked once the new one is stored (applying the fields changes the
	// grant in place, so it is copied first).
	replaced := *c
	if g := b.liveGrant(c); g != nil {
		kept := *g
		replaced.OAuth = &kept
	}
	if err := b.applyCredFields(ctx, req, d, svc, c, false); err != nil {
		return nil, err
	}
	if err := b.validateOAuthCred(ctx, req.Storage, svc, c); err != nil {
		return nil, err
	}
	c.UpdatedAt = b.now().UTC()
	if err := b.saveCredential(ctx, req.Storage, c); err != nil {
		return nil, err
	}
	b.logger.Info("credential updated", "name", name)
	resp, err := b.credResponse(ctx, req.Storage, c)
	if err != nil || !replaced.OAuth.Connected() || c.OAuth == nil || c.OAuth.RefreshToken == replaced.OAuth.RefreshToken {
		return resp, err
	}
	resp.Data["replaced_grant"] = b.revokeGrant(ctx, req.Storage, &replaced)
	return resp, nil
}

func (b *backend) pathCredRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateCredName(name); err != nil {
		return nil, err
	}
	c, err := getCredential(ctx, req.Storage, name)
	if err != nil || c == nil {
		return nil, err
	}
	return b.credResponse(ctx, req.Storage, c)
}

// credResponse describes c without any secret.
func (b *backend) credResponse(ctx context.Context, s logical.Storage, c *credential) (*logical.Response, error) {
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	sum := c.Summary()
	b.lastUse.overlay(c.Name, &sum)
	status, reason := sum.Status(b.now(), cfg.WarnBefore)
	data := map[string]interface{}{
		"name":          c.Name,
		"type":          c.Type,
		"service":       c.Service,
		"description":   c.Description,
		"status":        status,
		"status_reason": reason,
		"created_at":    formatTime(c.CreatedAt),
		"updated_at":    formatTime(c.UpdatedAt),
		"id":            c.ID,
		"last_used_at":  formatTime(sum.LastUsedAt),
		"expires_at":    "",
		"revision":      c.Revision,
	}
	if c.ExpiresAt != nil {
		data["expires_at"] = formatTime(*c.ExpiresAt)
	}
	if by, callers := b.lastUse.current(c); by != "" {
		data["last_used_by"] = by
		uses := make(map[string]string, len(callers))
		for caller, at := range callers {
			uses[caller] = formatTime(at)
		}
		data["last_used_by_caller"] = uses
	}
	switch c.Type {
	case typeAPIKey:
		data["key_hint"] = c.KeyHint
	case typePassword:
		data["username"] = c.Username
		if c.Host != "" {
			data["host"], data["port"] = c.Host, c.Port
		}
		if c.SMTP != nil {
			data["security"] = c.SMTP.Security
			data["allowed_senders"] = c.SMTP.AllowedSenders
		}
	case typeFile:
		data["filename"] = c.Filename
		data["file_size"] = len(c.File)
		if sa := c.ServiceAccount; sa != nil {
			data["client_email"] = sa.ClientEmail
			data["project_id"] = sa.ProjectID
		}
		if gh := c.GitHubApp; gh != nil {
			data["app_id"] = gh.AppID
			data["installation_id"] = gh.InstallationID
			data["repositories"] = gh.Repositories
			data["permissions"] = gh.Permissions
		}
	case typeOAuth2:
		data["app"] = c.App
		data["connected"] = c.OAuth.Connected()
		if c.ClientCredentials {
			data["grant"] = grantClientCredentials
		}
		if g := c.OAuth; g != nil {
			data["account"] = g.Account
			if g.AccountID != "" {
				data["account_id"] = g.AccountID
			}
			data["scopes"] = g.Scopes
			data["connected_at"] = formatTime(g.ConnectedAt)
			data["token_expires_at"] = formatTime(g.Expiry)
			data["refreshed_at"] = formatTime(g.RefreshedAt)
			data["next_refresh_at"] = formatTime(g.RefreshDue)
			data["last_refresh_error"] = g.RefreshError
		}
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathCredDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateCredName(name); err != nil {
		return nil, err
	}
	lock := b.credLock(name)
	lock.Lock()
	defer lock.Unlock()

	c, err := getCredential(ctx, req.Storage, name)
	if err != nil || c == nil {
		return nil, err
	}
	var resp *logical.Response
	if c.Type == typeOAuth2 && c.OAuth.Connected() {
		// Best effort: the grant is revoked at the provider first so that
		// deleting never leaves a live grant behind unknowingly; the
		// receipt says what could not be revoked.
		receipt := b.revokeGrant(ctx, req.Storage, c)
		resp = &logical.Response{Data: map[string]interface{}{"revocation": receipt}}
	}
	if err := b.deleteCredential(ctx, req.Storage, c); err != nil {
		return nil, err
	}
	b.lastUse.forget(name)
	b.oauth.dropHeld(name)
	b.logger.Info("credential deleted", "name", name)
	return resp, nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

const pathCredsHelpSyn = `Store, describe and delete one credential.`

const pathCredsHelpDesc = `
A credential is a secret of one of four types, for one service of the catalog:

  api_key   api_key
  password  username, password (and host, port, security, allowed_senders for
            SMTP; agents send mail with it through mail/<name>)
  file      file (base64, at most 1 MiB), filename; GCP service-account keys
            are checked and described by client_email and project_id
  oauth2    app (an OAuth client registration under apps/); connect through
            creds/<name>/connect, or import an existing refresh_token

Reading returns metadata only: the status (active, needs_attention, expired,
disconnected) with its reason, timestamps and a hint such as the key's last
characters. No path ever returns the secret; agents use it through proxy/<name>.
Deleting an OAuth credential revokes its grant at the provider first.

  vault write orgs/acme/creds/stripe-live type=api_key service=stripe api_key=sk_live_...
  vault read orgs/acme/creds/stripe-live
  vault delete orgs/acme/creds/stripe-live
`
