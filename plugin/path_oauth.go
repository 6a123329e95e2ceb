package credentials

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/oauth2"

	"github.com/clankteam/credentials/plugin/provider"
	"github.com/clankteam/credentials/plugin/store"
)

// connectTTL is how long a started connect can be completed: the state and
// PKCE verifier expire after it.
const connectTTL = 10 * time.Minute

// pendingConnectPrefix holds at most one pending connect per credential,
// keyed by its name; a new connect replaces the previous one.
const pendingConnectPrefix = "oauth/connect/"

// pendingConnect is a started connect, kept server side. After its
// callback it stays as a tombstone (Used, no verifier) so that a replayed
// callback gets a clear answer.
type pendingConnect struct {
	// StateHash is the SHA-256 of the state; the state itself is only in
	// the authorization URL.
	StateHash string `json:"state_hash"`
	// Verifier is the PKCE code verifier (secret until the exchange).
	Verifier    string   `json:"verifier,omitempty"`
	PKCE        bool     `json:"pkce,omitempty"`
	RedirectURL string   `json:"redirect_url,omitempty"`
	App         string   `json:"app,omitempty"`
	Scopes      []string `json:"scopes,omitempty"`
	// Replace: the person chose to replace a working grant.
	Replace   bool      `json:"replace,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Used      bool      `json:"used,omitempty"`
}

func pathOAuth(b *backend) []*framework.Path {
	name := map[string]*framework.FieldSchema{
		"name": {Type: framework.TypeString, Description: "Name of the oauth2 credential. Example: vault write -f orgs/acme/creds/gmail/connect (the name is in the path)", Required: true},
	}
	return []*framework.Path{
		{
			Pattern:      "creds/" + credNameSegment("name") + "/connect$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "connect", OperationSuffix: "cred"},
			Fields: map[string]*framework.FieldSchema{
				"name": name["name"],
				"replace": {
					Type:        framework.TypeBool,
					Default:     false,
					Description: "Replace a working grant. Needed to connect a credential that is connected and active; the grant it replaces is revoked at the provider once the new one is stored. The members' policy denies this field: replacing a working grant (perhaps with another person's account) is an admin's decision. Example: vault write orgs/acme/creds/gmail/connect replace=true",
				},
			},
			Operations:      callsProvider(b.pathConnect, "Start connecting an oauth2 credential: returns the provider's authorization URL."),
			HelpSynopsis:    pathConnectHelpSyn,
			HelpDescription: pathConnectHelpDesc,
		},
		{
			Pattern:      "creds/" + credNameSegment("name") + "/callback$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "complete-connect", OperationSuffix: "cred"},
			Fields: map[string]*framework.FieldSchema{
				"name": name["name"],
				"code": {
					Type:         framework.TypeString,
					Description:  "The authorization code from the provider's redirect. Example: code=4/0AeaYSHB (copied from the redirect)",
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
				},
				"state": {
					Type:        framework.TypeString,
					Description: "The state from the provider's redirect; must be the one connect returned. Example: state=Zm9vYmFy (copied from the redirect)",
				},
				"error": {
					Type:        framework.TypeString,
					Description: "The error from the provider's redirect, when the person or the provider refused. Example: error=access_denied",
				},
				"error_description": {
					Type:        framework.TypeString,
					Description: "The provider's description of error. Example: error_description='The user denied access'",
				},
				"iss": {
					Type:        framework.TypeString,
					Description: "The issuer from the provider's redirect (RFC 9207), when it sends one: it must be the service's oauth.issuer, so an answer from another provider (a mix-up) is refused. Required when the provider's metadata says it always sends one. Example: iss=https://accounts.google.com",
				},
			},
			Operations:      callsProvider(b.pathCallback, "Complete a connect: exchange the code and store the grant."),
			HelpSynopsis:    pathCallbackHelpSyn,
			HelpDescription: pathCallbackHelpDesc,
		},
		{
			Pattern:         "creds/" + credNameSegment("name") + "/disconnect$",
			DisplayAttrs:    &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "disconnect", OperationSuffix: "cred"},
			Fields:          name,
			Operations:      callsProvider(b.pathDisconnect, "Revoke the grant at the provider and drop its tokens."),
			HelpSynopsis:    pathDisconnectHelpSyn,
			HelpDescription: pathDisconnectHelpDesc,
		},
		{
			Pattern:         "creds/" + credNameSegment("name") + "/refresh$",
			DisplayAttrs:    &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "refresh", OperationSuffix: "cred"},
			Fields:          name,
			Operations:      callsProvider(b.pathRefresh, "Refresh the access token now."),
			HelpSynopsis:    pathRefreshHelpSyn,
			HelpDescription: pathRefreshHelpDesc,
		},
	}
}

// callsProvider is the update operation of a path whose handler may call
// the provider: on a performance standby, Vault forwards it to the node
// that can store the answer.
func callsProvider(cb framework.OperationFunc, summary string) map[logical.Operation]framework.OperationHandler {
	return map[logical.Operation]framework.OperationHandler{
		logical.UpdateOperation: &framework.PathOperation{Callback: cb, ForwardPerformanceStandby: true, Summary: summary},
	}
}

// oauthCredential reads name for an OAuth path.
func (b *backend) oauthCredential(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	if err := validateCredName(name); err != nil {
		return nil, err
	}
	c, err := getCredential(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, userErrorf("credential %q does not exist", name)
	}
	if c.Type != typeOAuth2 {
		return nil, userErrorf("credential %q is of type %s; only oauth2 credentials connect", name, c.Type)
	}
	return c, nil
}

func (b *backend) pathConnect(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	lock := b.credLock(name)
	lock.Lock()
	defer lock.Unlock()
	c, err := b.oauthCredential(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if c.ClientCredentials {
		return nil, userErrorf("credential %s uses app %s's client credentials grant: there is nothing to connect or refresh; app-only tokens are minted on use", name, c.App)
	}
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg.RedirectURL == "" {
		return nil, userErrorf("redirect_url is not configured: write the portal's OAuth callback URL to config first")
	}
	svc, err := b.getService(ctx, req.Storage, c.Service)
	if err != nil {
		return nil, err
	}
	if svc == nil || svc.OAuth == nil || svc.OAuth.AuthURL == "" {
		return nil, userErrorf("service %q has no OAuth authorization endpoint", c.Service)
	}
	app, err := getApp(ctx, req.Storage, c.App)
	if err != nil {
		return nil, err
	}
	if app == nil {
		return nil, userErrorf("app %q of credential %q does not exist", c.App, name)
	}

	if replace := d.Get("replace").(bool); !replace && c.State == statusActive && c.OAuth.Connected() && !c.OAuth.ReconnectRequired {
		who := ""
		if c.OAuth.Account != "" {
			who = " (" + c.OAuth.Account + ")"
		}
		return nil, userErrorf("credential %s is connected%s and working: connecting again replaces its grant and revokes it at the provider; pass replace=true, which takes the org's admin policy", name, who)
	}
	state, err := randomToken()
	if err != nil {
		return nil, err
	}
	now := b.now().UTC()
	p := &pendingConnect{
		StateHash:   tokenHash(state),
		PKCE:        svc.OAuth.PKCE,
		RedirectURL: cfg.RedirectURL,
		App:         app.Name,
		Scopes:      requestedScopes(svc, app),
		Replace:     d.Get("replace").(bool),
		CreatedAt:   now,
		ExpiresAt:   now.Add(connectTTL),
	}
	if p.PKCE {
		p.Verifier = oauth2.GenerateVerifier()
	}
	authURL := b.oauth.provider.AuthCodeURL(svc.OAuth, app.client(), provider.AuthRequest{
		RedirectURL: cfg.RedirectURL, State: state, Verifier: p.Verifier, Scopes: p.Scopes,
	})
	if err := putPendingConnect(ctx, req.Storage, name, p); err != nil {
		return nil, err
	}
	b.logger.Info("connect started", "name", name, "service", c.Service, "pkce", p.PKCE)
	return &logical.Response{Data: map[string]interface{}{
		"auth_url":   authURL,
		"state":      state,
		"expires_at": formatTime(p.ExpiresAt),
	}}, nil
}

func (b *backend) pathCallback(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	code, state := d.Get("code").(string), d.Get("state").(string)
	provErr := d.Get("error").(string)
	if state == "" {
		return nil, userErrorf("state is required: pass the state from the provider's redirect")
	}
	lock := b.credLock(name)
	lock.Lock()
	defer lock.Unlock()
	c, err := b.oauthCredential(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	p, verifier, err := b.spendPendingConnect(ctx, req.Storage, c, state)
	if err != nil {
		return nil, err
	}
	if provErr != "" {
		return nil, userErrorf("the provider did not grant access: %s %s", clip(provErr, 80), clip(d.Get("error_description").(string), 200))
	}
	if code == "" {
		return nil, userErrorf("code is required: pass the code from the provider's redirect")
	}

	svc, app, cfg, err := b.oauthContext(ctx, req.Storage, c)
	if err != nil {
		return nil, err
	}
	if err := checkIssuer(svc.OAuth, d.Get("iss").(string)); err != nil {
		return nil, err
	}
	tok, pe := b.oauth.provider.Exchange(ctx, svc.OAuth, app.client(), p.RedirectURL, code, verifier)
	if pe != nil {
		b.logger.Warn("code exchange failed", "name", name, "code", pe.Code, "status", pe.Status)
		if pe.Kind == provider.Transient {
			return nil, fmt.Errorf("%s: start a new connect", pe.Error())
		}
		return nil, userErrorf("%s: start a new connect", pe.Error())
	}

	return b.storeConnectedGrant(ctx, req.Storage, c, svc, cfg, p, tok)
}

// spendPendingConnect checks that state is the one of c's pending connect,
// still valid, and spends it: a callback is accepted once. It returns the
// connect and its PKCE verifier ("" without PKCE).
func (b *backend) spendPendingConnect(ctx context.Context, s logical.Storage, c *credential, state string) (*pendingConnect, string, error) {
	name := c.Name
	p, err := getPendingConnect(ctx, s, name)
	if err != nil {
		return nil, "", err
	}
	now := b.now()
	stateOK := p != nil && subtle.ConstantTimeCompare([]byte(tokenHash(state)), []byte(p.StateHash)) == 1
	switch {
	case p == nil:
		return nil, "", userErrorf("no connect is pending for credential %q: start one with creds/%s/connect", name, name)
	case !stateOK:
		// The pending connect is kept: this may be a forged callback, and
		// the genuine one can still complete it.
		return nil, "", userErrorf("state does not match the connect pending for credential %q: the callback belongs to another connect", name)
	case p.Used:
		return nil, "", userErrorf("this state was already used: a callback is accepted once; start a new connect")
	case !now.Before(p.ExpiresAt):
		_ = s.Delete(ctx, pendingConnectPrefix+name)
		return nil, "", userErrorf("the connect expired at %s (a connect must complete within %s): start a new one", formatTime(p.ExpiresAt), connectTTL)
	case p.PKCE && p.Verifier == "":
		_ = s.Delete(ctx, pendingConnectPrefix+name)
		return nil, "", userErrorf("the pending connect has no PKCE verifier, so the code cannot be exchanged safely: start a new connect")
	case p.App != c.App || p.CreatedAt.Before(c.CreatedAt):
		// The credential was changed, or deleted and created again.
		_ = s.Delete(ctx, pendingConnectPrefix+name)
		return nil, "", userErrorf("the credential changed since the connect started: start a new connect")
	}

	// Single use: the state is spent before the code is exchanged.
	verifier := p.Verifier
	if err := putPendingConnect(ctx, s, name, &pendingConnect{StateHash: p.StateHash, CreatedAt: p.CreatedAt, ExpiresAt: p.ExpiresAt, Used: true}); err != nil {
		return nil, "", err
	}
	if !p.PKCE {
		verifier = ""
	}
	return p, verifier, nil
}

// storeConnectedGrant stores the grant a connect's code exchange gave, in
// place of c's previous grant, which is then revoked at the provider.
func (b *backend) storeConnectedGrant(ctx context.Context, s logical.Storage, c *credential, svc *service, cfg *mountConfig, p *pendingConnect, tok *provider.Token) (*logical.Response, error) {
	now, name := b.now(), c.Name
	g := grantFromToken(nil, tok, now, cfg.MaxTokenLifetime)
	if len(g.Scopes) == 0 {
		g.Scopes = p.Scopes
	}
	g.ConnectedAt = now.UTC()
	b.fetchAccount(ctx, svc.OAuth, g)
	if c.OAuth != nil {
		g.RefreshDue = c.OAuth.RefreshDue // so that refiling removes the old entry
	}
	// The grant this one replaces is revoked once the new one is stored:
	// nothing in the product could revoke it afterwards.
	replaced := *c
	replaced.OAuth = b.liveGrant(c)
	c.OAuth = g
	c.State, c.StateReason = statusActive, ""
	c.UpdatedAt = now.UTC()
	b.oauth.dropHeld(name)
	b.refile(ctx, s, c, refreshDueAt(g, svc.OAuth, cfg, now), false)
	if err := b.saveCredential(ctx, s, c); err != nil {
		// Nothing would know these tokens: revoke them rather than leave
		// a live grant behind.
		receipt := b.revokeGrant(ctx, s, c)
		b.logger.Error("storing a new grant failed; revoked it at the provider", "name", name, "revoked", fmt.Sprint(receipt["revoked"]))
		return nil, fmt.Errorf("storing the grant of %s failed (the new tokens were revoked at the provider): %w", name, err)
	}
	b.logger.Info("credential connected", "name", name, "service", c.Service)
	resp, err := b.credResponse(ctx, s, c)
	if err != nil || !replaced.OAuth.Connected() {
		return resp, err
	}
	receipt := b.revokeGrant(ctx, s, &replaced)
	b.logger.Info("replaced grant revoked", "name", name, "revoked", fmt.Sprint(receipt["revoked"]), "not_revoked", fmt.Sprint(receipt["not_revoked"]))
	resp.Data["replaced_grant"] = receipt
	return resp, nil
}

func (b *backend) pathDisconnect(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	receipt, err := b.disconnect(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{
		"status":     statusDisconnected,
		"revocation": receipt,
	}}, nil
}

// disconnect revokes oauth2 credential name's grant at its provider, drops
// its tokens and marks it disconnected, whatever the provider answered:
// the receipt says what was and was not revoked. The kill switch's work
// for each grant too.
func (b *backend) disconnect(ctx context.Context, s logical.Storage, name string) (map[string]interface{}, error) {
	lock := b.credLock(name)
	lock.Lock()
	defer lock.Unlock()
	c, err := b.oauthCredential(ctx, s, name)
	if err != nil {
		return nil, err
	}
	receipt := b.revokeGrant(ctx, s, c)
	now := b.now().UTC()
	if c.OAuth == nil {
		c.OAuth = &oauthGrant{}
	}
	b.refile(ctx, s, c, time.Time{}, false)
	g := c.OAuth
	g.AccessToken, g.RefreshToken, g.Expiry = "", "", time.Time{}
	g.RetryAt, g.RefreshFailures, g.RefreshError, g.ReconnectRequired = time.Time{}, 0, "", false
	c.State, c.StateReason = statusDisconnected, "disconnected on "+now.Format("2006-01-02")
	c.UpdatedAt = now
	b.oauth.dropHeld(name)
	if err := b.saveCredential(ctx, s, c); err != nil {
		return nil, err
	}
	_ = s.Delete(ctx, pendingConnectPrefix+name)
	b.logger.Info("credential disconnected", "name", name)
	return receipt, nil
}

func (b *backend) pathRefresh(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	c, err := b.oauthCredential(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if c.ClientCredentials {
		return nil, userErrorf("credential %s uses app %s's client credentials grant: there is nothing to connect or refresh; app-only tokens are minted on use", name, c.App)
	}
	if c.State == statusDisconnected || !c.OAuth.Connected() {
		return nil, userErrorf("credential %q is not connected: connect it first", name)
	}
	if c.OAuth.RefreshToken == "" {
		return nil, userErrorf("credential %q has no refresh token (the provider issued none): reconnect to renew it", name)
	}
	r := b.refreshShared(ctx, req.Storage, name, refreshForced)
	if r.err != nil {
		// A provider's refusal is the caller's to fix (400); a
		// provider that is down is not (errorResponse).
		return nil, r.err
	}
	c, err = getCredential(ctx, req.Storage, name)
	if err != nil || c == nil {
		return nil, err
	}
	return b.credResponse(ctx, req.Storage, c)
}

// checkIssuer applies RFC 9207 to a callback's iss.
func checkIssuer(spec *oauthSpec, iss string) error {
	switch {
	case spec.Issuer == "" || (iss == "" && !spec.IssRequired):
		return nil
	case iss == "":
		return userErrorf("the callback has no iss, which the provider %s sends on every answer: it may come from another provider; start a new connect", spec.Issuer)
	case iss != spec.Issuer:
		return userErrorf("the callback's iss %q is not the service's issuer %q: the answer comes from another provider (a mix-up), and its code is not exchanged; start a new connect", clip(iss, 200), spec.Issuer)
	}
	return nil
}

func getPendingConnect(ctx context.Context, s logical.Storage, name string) (*pendingConnect, error) {
	return store.ReadJSON[pendingConnect](ctx, s, pendingConnectPrefix+name, "the pending connect of "+name)
}

func putPendingConnect(ctx context.Context, s logical.Storage, name string, p *pendingConnect) error {
	entry, err := logical.StorageEntryJSON(pendingConnectPrefix+name, p)
	if err != nil {
		return fmt.Errorf("encoding the pending connect: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing the pending connect of %s: %w", name, err)
	}
	return nil
}

// randomToken is 32 random bytes, base64url: an unguessable state.
func randomToken() (string, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generating state: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(buf), nil
}

const pathConnectHelpSyn = `Start connecting an oauth2 credential to its provider.`

const pathConnectHelpDesc = `
Returns auth_url, the provider's authorization URL to send the person to,
state, and expires_at. The state and the PKCE verifier (S256, wherever the
provider supports it) stay in the engine: a connect is completed once, within
10 minutes, through creds/<name>/callback, and a new connect replaces the
previous one. The redirect URI is config's redirect_url, exactly; the scopes
are the app's (or the service's defaults), plus the service's extra
authorization parameters (Google: access_type=offline, prompt=consent).

A credential that is connected and active is connected again only with
replace=true, which the members' policy denies: replacing a working grant,
perhaps with another person's account, is an admin's decision. Members
connect credentials that are not connected yet or need attention. The grant a
connect replaces is revoked at the provider once the new one is stored; the
callback answers the receipt as replaced_grant.

  vault write -f orgs/acme/creds/gmail/connect
  vault write orgs/acme/creds/gmail/connect replace=true
`

const pathCallbackHelpSyn = `Complete a connect with the code and state of the provider's redirect.`

const pathCallbackHelpDesc = `
The portal's OAuth callback passes on the provider's redirect: code and state
(or error). The state must be the one connect returned, unused and not
expired; the code is exchanged with the PKCE verifier for tokens, the granted
scopes and the account's identity (where the service offers a userinfo
endpoint) are recorded, and the credential becomes active. A refused callback
stores nothing.

  vault write orgs/acme/creds/gmail/callback code=... state=...
`

const pathDisconnectHelpSyn = `Revoke the grant at the provider and drop its tokens.`

const pathDisconnectHelpDesc = `
Revokes the grant the provider's way (RFC 7009; GitHub's DELETE
/applications/{client_id}/token; Slack's auth.revoke), then drops the tokens
and sets the status to disconnected, whatever the provider answered. The
response's revocation receipt lists what was revoked and what was not, with
the reason: Microsoft, for one, has no per-token revocation. Connect again to
reuse the credential.

  vault write -f orgs/acme/creds/gmail/disconnect
`

const pathRefreshHelpSyn = `Refresh an oauth2 credential's access token now.`

const pathRefreshHelpDesc = `
Refreshes the access token at once, whether or not it is due. Tokens are also
refreshed on use (when they expire within config's refresh_ahead) and on a
schedule. A provider that rotates refresh tokens gets its new one stored
before the new access token is used. If the provider refuses the refresh
token (invalid_grant), the credential needs attention: reconnect it.

  vault write -f orgs/acme/creds/gmail/refresh
`
