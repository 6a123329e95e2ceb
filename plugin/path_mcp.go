package credentials

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/plugin/store"
)

// MCP grants: an MCP client a person connected to one of the org's agents
// through the portal's OAuth authorization server. The portal is stateless
// and may run as several instances, so what must outlive one request lives
// here: the authorization code (hashed, single use, with its PKCE
// challenge and bindings), the refresh token (hashed, rotated on every use,
// a reuse ends the grant) and the agent's AppRole login the grant mints
// Vault tokens with (seal-wrapped; handed out only sealed to an edge key).
//
// A person writes the grant (mcp/grants/<id>) with their own token when
// they approve the client. The client then has only a code or a refresh
// token, no Vault token: mcp/token is unauthenticated, and the code or
// refresh token is what it checks.
const (
	mcpGrantPrefix = "mcp/grants/"
	// mcpCodeTTLMax bounds how long a code may be redeemed.
	mcpCodeTTLMax = 10 * time.Minute
	// mcpSpentKept is how many spent refresh tokens a grant remembers,
	// to tell a replay (which ends the grant) from a stranger's guess.
	mcpSpentKept = 16
	// mcpIssuedKept bounds the access tokens a grant remembers, to revoke
	// them when it is disconnected.
	mcpIssuedKept = 64
)

var mcpGrantIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// mcpGrant is one connected MCP client.
type mcpGrant struct {
	ID          string    `json:"id"`
	Agent       string    `json:"agent"`
	ClientID    string    `json:"client_id"`
	ClientName  string    `json:"client_name"`
	RedirectURI string    `json:"redirect_uri"`
	Resource    string    `json:"resource"`
	Scope       string    `json:"scope,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   string    `json:"created_by,omitempty"`

	// The agent's AppRole login this grant's tokens are minted with.
	RoleID           string `json:"role_id"`
	SecretID         string `json:"secret_id"`
	SecretIDAccessor string `json:"secret_id_accessor"`

	CodeHash      string    `json:"code_hash"`
	CodeChallenge string    `json:"code_challenge"`
	CodeExpires   time.Time `json:"code_expires"`
	CodeUsed      bool      `json:"code_used,omitempty"`

	RefreshHash string   `json:"refresh_hash,omitempty"`
	SpentHashes []string `json:"spent,omitempty"`

	// Issued are the access tokens minted, by accessor, while they live.
	Issued []mcpIssued `json:"issued,omitempty"`

	ConnectedAt time.Time `json:"connected_at,omitzero"`
	LastUsedAt  time.Time `json:"last_used_at,omitzero"`
	// Ended says why the grant no longer mints tokens (a replayed
	// refresh token or code); a person disconnects it to clean up.
	Ended string `json:"ended,omitempty"`
}

type mcpIssued struct {
	Accessor string    `json:"accessor"`
	Expires  time.Time `json:"expires"`
}

func mcpGrantFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"id":                 {Type: framework.TypeString, Description: "The grant's ID: 32 hex characters, chosen by the portal. Example: vault write orgs/acme/mcp/grants/0123456789abcdef0123456789abcdef ... (the ID is in the path)", Required: true},
		"agent":              {Type: framework.TypeString, Description: "The agent the client acts as (its short name). Example: agent=assistant"},
		"client_id":          {Type: framework.TypeString, Description: "The OAuth client's ID: its metadata document's https URL, or the portal's registration. Example: client_id=https://app.example.com/oauth/client.json"},
		"client_name":        {Type: framework.TypeString, Description: "The client's name, as the person saw it when approving. Example: client_name='Claude Code'"},
		"redirect_uri":       {Type: framework.TypeString, Description: "The redirect URI the code was issued for; the token request must name it again. Example: redirect_uri=http://127.0.0.1:33418/callback"},
		"resource":           {Type: framework.TypeString, Description: "The protected resource (RFC 8707) the tokens are for: the portal's /mcp/<org> URL. Example: resource=https://portal.example.com/mcp/acme"},
		"scope":              {Type: framework.TypeString, Description: "The scope granted. Example: scope=mcp"},
		"role_id":            {Type: framework.TypeString, Description: "The agent's AppRole role ID. Example: role_id=5f9c..."},
		"secret_id":          {Type: framework.TypeString, Description: "A secret ID of the agent's role made for this grant; never returned. Example: secret_id=@secret-id.txt", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"secret_id_accessor": {Type: framework.TypeString, Description: "The secret ID's accessor, to destroy it on disconnect. Example: secret_id_accessor=84896a0c-..."},
		"code_hash":          {Type: framework.TypeString, Description: "SHA-256 (hex) of the authorization code the client redeems. Example: code_hash=9f86d081..."},
		"code_challenge":     {Type: framework.TypeString, Description: "The client's PKCE S256 code challenge. Example: code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"},
		"code_ttl":           {Type: framework.TypeDurationSecond, Description: "How long the code may be redeemed, at most 10m. Example: code_ttl=60s", Default: 60},
	}
}

func mcpTokenFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"grant_type":    {Type: framework.TypeString, Description: "authorization_code or refresh_token. Example: grant_type=refresh_token", AllowedValues: []interface{}{"authorization_code", "refresh_token"}},
		"code":          {Type: framework.TypeString, Description: "The authorization code. Example: code=<grant id>.<random>", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"code_verifier": {Type: framework.TypeString, Description: "The PKCE code verifier. Example: code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"redirect_uri":  {Type: framework.TypeString, Description: "The redirect URI of the authorization request. Example: redirect_uri=http://127.0.0.1:33418/callback"},
		"client_id":     {Type: framework.TypeString, Description: "The client's ID; must be the grant's. Example: client_id=https://app.example.com/oauth/client.json"},
		"resource":      {Type: framework.TypeString, Description: "The resource the token is for; when given, must be the grant's. Example: resource=https://portal.example.com/mcp/acme"},
		"refresh_token": {Type: framework.TypeString, Description: "The current refresh token. Example: refresh_token=<grant id>.<random>", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"edge_key":      {Type: framework.TypeString, Description: "The edge key id the agent's login is sealed to. Example: edge_key=3f2a9c0b1d4e"},
		"accessor":      {Type: framework.TypeString, Description: "The accessor of the access token minted with the login (mcp/token/issued). Example: accessor=hmac-..."},
		"expires_at":    {Type: framework.TypeTime, Description: "When that access token expires (mcp/token/issued). Example: expires_at=2026-12-04T21:15:00Z"},
	}
}

func pathMCP(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "mcp/grants/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationSuffix: "mcp-grants"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathMCPGrantsList, Summary: "List the connected MCP clients, with their agent, name and last use."},
			},
			HelpSynopsis:    "List the MCP clients connected to the org's agents.",
			HelpDescription: pathMCPHelpDesc,
		},
		{
			Pattern:      mcpGrantPrefix + framework.GenericNameRegex("id") + "$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationSuffix: "mcp-grant"},
			Fields:       mcpGrantFields(),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{Callback: b.pathMCPGrantWrite, Summary: "Record an approved MCP client and its authorization code."},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathMCPGrantWrite, Summary: "Record an approved MCP client and its authorization code."},
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathMCPGrantRead, Summary: "Describe a connected MCP client (never a secret)."},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathMCPGrantDelete, Summary: "Disconnect an MCP client: answers what to revoke in Vault."},
			},
			ExistenceCheck:  b.mcpGrantExists,
			HelpSynopsis:    "One connected MCP client.",
			HelpDescription: pathMCPHelpDesc,
		},
		{
			Pattern:      "mcp/token$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "issue", OperationSuffix: "mcp-token"},
			Fields:       mcpTokenFields(),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathMCPToken, ForwardPerformanceStandby: true, Summary: "Redeem a code or a refresh token: a new refresh token and the agent's login, sealed."},
			},
			HelpSynopsis:    "The MCP authorization server's token step (unauthenticated).",
			HelpDescription: pathMCPHelpDesc,
		},
		{
			Pattern:      "mcp/token/issued$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "record", OperationSuffix: "mcp-token"},
			Fields:       mcpTokenFields(),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathMCPTokenIssued, ForwardPerformanceStandby: true, Summary: "Record the access token minted for a grant, to revoke it on disconnect."},
			},
			HelpSynopsis:    "Record an MCP access token's accessor (unauthenticated).",
			HelpDescription: pathMCPHelpDesc,
		},
	}
}

func (b *backend) mcpGrantLock(id string) func() {
	l := b.credLock("\x00mcp\x00" + id)
	l.Lock()
	return l.Unlock
}

func getMCPGrant(ctx context.Context, s logical.Storage, id string) (*mcpGrant, error) {
	return store.ReadJSON[mcpGrant](ctx, s, mcpGrantPrefix+id, "mcp grant "+id)
}

func putMCPGrant(ctx context.Context, s logical.Storage, g *mcpGrant) error {
	e, err := logical.StorageEntryJSON(mcpGrantPrefix+g.ID, g)
	if err != nil {
		return fmt.Errorf("encoding mcp grant %s: %w", g.ID, err)
	}
	if err := s.Put(ctx, e); err != nil {
		return fmt.Errorf("storing mcp grant %s: %w", g.ID, err)
	}
	return nil
}

func (b *backend) mcpGrantExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	g, err := getMCPGrant(ctx, req.Storage, d.Get("id").(string))
	return g != nil, err
}

// mcpField checks one string of a grant: required, bounded, no control
// characters.
func mcpField(d *framework.FieldData, name string, max int) (string, error) {
	v := strings.TrimSpace(d.Get(name).(string))
	if v == "" || len(v) > max || hasControl(v) {
		return "", userErrorf("%s is required: 1-%d characters without control characters", name, max)
	}
	return v, nil
}

func (b *backend) pathMCPGrantWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	id := d.Get("id").(string)
	if !mcpGrantIDPattern.MatchString(id) {
		return nil, userErrorf("the grant ID must be 32 lowercase hex characters")
	}
	g := &mcpGrant{ID: id, CreatedAt: b.now().UTC(), CreatedBy: req.DisplayName}
	for _, f := range []struct {
		name string
		max  int
		dst  *string
	}{
		{"agent", 64, &g.Agent}, {"client_id", 2048, &g.ClientID}, {"client_name", 200, &g.ClientName},
		{"redirect_uri", 2048, &g.RedirectURI}, {"resource", 2048, &g.Resource},
		{"role_id", 128, &g.RoleID}, {"secret_id", 256, &g.SecretID}, {"secret_id_accessor", 128, &g.SecretIDAccessor},
		{"code_challenge", 128, &g.CodeChallenge},
	} {
		v, err := mcpField(d, f.name, f.max)
		if err != nil {
			return nil, err
		}
		*f.dst = v
	}
	g.Scope = strings.TrimSpace(d.Get("scope").(string))
	if len(g.Scope) > 512 || hasControl(g.Scope) {
		return nil, userErrorf("scope must be at most 512 characters without control characters")
	}
	codeHash := d.Get("code_hash").(string)
	if len(codeHash) != 64 || strings.Trim(codeHash, "0123456789abcdef") != "" {
		return nil, userErrorf("code_hash must be the SHA-256 of the code, 64 lowercase hex characters")
	}
	g.CodeHash = codeHash
	if raw, err := base64.RawURLEncoding.DecodeString(g.CodeChallenge); err != nil || len(raw) != sha256.Size {
		return nil, userErrorf("code_challenge must be a PKCE S256 challenge: the base64url SHA-256 of the verifier")
	}
	ttl := time.Duration(d.Get("code_ttl").(int)) * time.Second
	if ttl <= 0 || ttl > mcpCodeTTLMax {
		return nil, userErrorf("code_ttl must be between 1s and %s", mcpCodeTTLMax)
	}
	g.CodeExpires = g.CreatedAt.Add(ttl)

	defer b.mcpGrantLock(id)()
	old, err := getMCPGrant(ctx, req.Storage, id)
	if err != nil {
		return nil, err
	}
	if old != nil {
		return nil, userErrorf("grant %s exists: a grant is written once, when a person approves a client", id)
	}
	if err := putMCPGrant(ctx, req.Storage, g); err != nil {
		return nil, err
	}
	b.logger.Info("mcp client approved", "grant", id, "agent", g.Agent, "client", g.ClientName)
	return &logical.Response{Data: mcpGrantData(g, b.now())}, nil
}

// mcpGrantData is what may be shown of g: no secret, no hash.
func mcpGrantData(g *mcpGrant, now time.Time) map[string]interface{} {
	state := "pending"
	switch {
	case g.Ended != "":
		state = "ended"
	case g.RefreshHash != "":
		state = "connected"
	case !now.Before(g.CodeExpires):
		state = "expired"
	}
	out := map[string]interface{}{
		"id": g.ID, "agent": g.Agent, "client_id": g.ClientID, "client_name": g.ClientName,
		"redirect_uri": g.RedirectURI, "resource": g.Resource, "scope": g.Scope,
		"created_at": formatTime(g.CreatedAt), "created_by": g.CreatedBy, "state": state,
	}
	if !g.ConnectedAt.IsZero() {
		out["connected_at"] = formatTime(g.ConnectedAt)
	}
	if !g.LastUsedAt.IsZero() {
		out["last_used_at"] = formatTime(g.LastUsedAt)
	}
	if g.Ended != "" {
		out["ended"] = g.Ended
	}
	return out
}

func (b *backend) pathMCPGrantRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	g, err := getMCPGrant(ctx, req.Storage, d.Get("id").(string))
	if err != nil || g == nil {
		return nil, err
	}
	return &logical.Response{Data: mcpGrantData(g, b.now())}, nil
}

func (b *backend) pathMCPGrantsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ids, err := req.Storage.List(ctx, mcpGrantPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing mcp grants: %w", err)
	}
	sort.Strings(ids)
	info := map[string]interface{}{}
	now := b.now()
	for _, id := range ids {
		g, err := getMCPGrant(ctx, req.Storage, id)
		if err != nil {
			return nil, err
		}
		if g != nil {
			info[id] = mcpGrantData(g, now)
		}
	}
	return logical.ListResponseWithInfo(ids, info), nil
}

// pathMCPGrantDelete removes the grant and answers what the person's
// portal revokes with their token: the secret ID and the access tokens
// still alive. The engine cannot revoke Vault tokens itself.
func (b *backend) pathMCPGrantDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	id := d.Get("id").(string)
	defer b.mcpGrantLock(id)()
	g, err := getMCPGrant(ctx, req.Storage, id)
	if err != nil || g == nil {
		return nil, err
	}
	if err := req.Storage.Delete(ctx, mcpGrantPrefix+id); err != nil {
		return nil, fmt.Errorf("deleting mcp grant %s: %w", id, err)
	}
	now := b.now()
	accessors := []string{}
	for _, t := range g.Issued {
		if now.Before(t.Expires) {
			accessors = append(accessors, t.Accessor)
		}
	}
	b.logger.Info("mcp client disconnected", "grant", id, "agent", g.Agent)
	return &logical.Response{Data: map[string]interface{}{
		"agent": g.Agent, "secret_id_accessor": g.SecretIDAccessor, "token_accessors": accessors,
	}}, nil
}

// oauthError is a refusal of the token step in OAuth's words: the portal
// answers the client with code and the message.
func oauthError(code, format string, args ...any) error {
	return userErrorf(code+": "+format, args...)
}

// mcpGrantOf reads the grant a code or refresh token names, under its lock
// (the caller releases it).
func (b *backend) mcpGrantOf(ctx context.Context, s logical.Storage, token string) (*mcpGrant, func(), error) {
	id, _, ok := strings.Cut(token, ".")
	if !ok || !mcpGrantIDPattern.MatchString(id) {
		return nil, nil, oauthError("invalid_grant", "the code or refresh token is not one this server issued")
	}
	unlock := b.mcpGrantLock(id)
	g, err := getMCPGrant(ctx, s, id)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	if g == nil {
		unlock()
		return nil, nil, oauthError("invalid_grant", "the grant was disconnected or never existed")
	}
	return g, unlock, nil
}

func hashEqual(token, hash string) bool {
	return subtle.ConstantTimeCompare([]byte(tokenHash(token)), []byte(hash)) == 1
}

func (b *backend) pathMCPToken(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	if !b.writeSafe() {
		return nil, logical.ErrReadOnly
	}
	keyID := d.Get("edge_key").(string)
	if len(b.egress.edgeKeys) == 0 {
		return nil, errNoEdgeKeys
	}
	clientID := d.Get("client_id").(string)
	var (
		g      *mcpGrant
		unlock func()
		err    error
	)
	switch d.Get("grant_type").(string) {
	case "authorization_code":
		g, unlock, err = b.redeemCode(ctx, req.Storage, d, clientID)
	case "refresh_token":
		g, unlock, err = b.redeemRefresh(ctx, req.Storage, d.Get("refresh_token").(string), clientID)
	default:
		return nil, oauthError("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
	}
	if err != nil {
		return nil, err
	}
	defer unlock()

	rt, err := randomToken()
	if err != nil {
		return nil, err
	}
	rt = g.ID + "." + rt
	now := b.now().UTC()
	if g.RefreshHash != "" {
		g.SpentHashes = append(g.SpentHashes, g.RefreshHash)
		if n := len(g.SpentHashes); n > mcpSpentKept {
			g.SpentHashes = g.SpentHashes[n-mcpSpentKept:]
		}
	}
	g.RefreshHash, g.LastUsedAt = tokenHash(rt), now
	if g.ConnectedAt.IsZero() {
		g.ConnectedAt = now
	}
	sealed, err := egress.SealFor(b.egress.edgeKeys, keyID, egress.MCPLoginInfo(req.MountPoint, g.ID), egress.MCPLogin{RoleID: g.RoleID, SecretID: g.SecretID})
	if err != nil {
		if err == egress.ErrUnknownEdgeKey {
			return nil, userErrorf("edge_key %q is not one of the operator's edge keys (%s)", keyID, egress.EdgeKeysEnv)
		}
		return nil, err
	}
	if err := putMCPGrant(ctx, req.Storage, g); err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{
		"grant": g.ID, "agent": g.Agent, "refresh_token": rt, "scope": g.Scope, "resource": g.Resource,
		egress.FieldSealed: sealed, egress.FieldEdgeKey: keyID,
	}}, nil
}

// redeemCode checks an authorization code against its grant: single use,
// unexpired, the same client, redirect URI and resource, and the PKCE
// verifier of the challenge. A code presented twice ends the grant (RFC
// 6749 10.5: whoever has it may not be the client).
func (b *backend) redeemCode(ctx context.Context, s logical.Storage, d *framework.FieldData, clientID string) (*mcpGrant, func(), error) {
	code := d.Get("code").(string)
	g, unlock, err := b.mcpGrantOf(ctx, s, code)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*mcpGrant, func(), error) {
		unlock()
		return nil, nil, err
	}
	switch {
	case g.Ended != "":
		return fail(oauthError("invalid_grant", "the grant ended: %s", g.Ended))
	case !hashEqual(code, g.CodeHash):
		return fail(oauthError("invalid_grant", "the code is not this grant's"))
	case g.CodeUsed:
		g.Ended = "its authorization code was presented twice"
		g.SecretID = ""
		if err := putMCPGrant(ctx, s, g); err != nil {
			return fail(err)
		}
		b.logger.Warn("mcp authorization code replayed; grant ended", "grant", g.ID)
		return fail(oauthError("invalid_grant", "the code was already used; the grant is ended"))
	case !b.now().Before(g.CodeExpires):
		return fail(oauthError("invalid_grant", "the code expired"))
	case clientID != g.ClientID:
		return fail(oauthError("invalid_grant", "the code was issued to another client"))
	case d.Get("redirect_uri").(string) != g.RedirectURI:
		return fail(oauthError("invalid_grant", "redirect_uri is not the authorization request's"))
	case d.Get("resource").(string) != "" && d.Get("resource").(string) != g.Resource:
		return fail(oauthError("invalid_target", "the code was issued for resource %s", g.Resource))
	}
	verifier := d.Get("code_verifier").(string)
	if len(verifier) < 43 || len(verifier) > 128 {
		return fail(oauthError("invalid_grant", "code_verifier must be 43-128 characters (PKCE)"))
	}
	sum := sha256.Sum256([]byte(verifier))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(g.CodeChallenge)) != 1 {
		return fail(oauthError("invalid_grant", "code_verifier does not match the code challenge"))
	}
	g.CodeUsed = true
	return g, unlock, nil
}

// redeemRefresh checks a refresh token: the grant's current one. A spent
// one ends the grant: a refresh token is used once, so its second use is a
// copy.
func (b *backend) redeemRefresh(ctx context.Context, s logical.Storage, rt, clientID string) (*mcpGrant, func(), error) {
	g, unlock, err := b.mcpGrantOf(ctx, s, rt)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*mcpGrant, func(), error) {
		unlock()
		return nil, nil, err
	}
	if g.Ended != "" {
		return fail(oauthError("invalid_grant", "the grant ended: %s", g.Ended))
	}
	for _, h := range g.SpentHashes {
		if hashEqual(rt, h) {
			g.Ended = "a refresh token was used twice"
			g.SecretID, g.RefreshHash = "", ""
			if err := putMCPGrant(ctx, s, g); err != nil {
				return fail(err)
			}
			b.logger.Warn("mcp refresh token replayed; grant ended", "grant", g.ID)
			return fail(oauthError("invalid_grant", "the refresh token was already used; the grant is ended"))
		}
	}
	if g.RefreshHash == "" || !hashEqual(rt, g.RefreshHash) {
		return fail(oauthError("invalid_grant", "the refresh token is not this grant's"))
	}
	if clientID != g.ClientID {
		return fail(oauthError("invalid_grant", "the refresh token was issued to another client"))
	}
	return g, unlock, nil
}

func (b *backend) pathMCPTokenIssued(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	rt := d.Get("refresh_token").(string)
	accessor := d.Get("accessor").(string)
	if accessor == "" || len(accessor) > 128 || hasControl(accessor) {
		return nil, userErrorf("accessor is required: the access token's accessor")
	}
	expires := d.Get("expires_at").(time.Time)
	g, unlock, err := b.mcpGrantOf(ctx, req.Storage, rt)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if g.Ended != "" || g.RefreshHash == "" || !hashEqual(rt, g.RefreshHash) {
		return nil, oauthError("invalid_grant", "the refresh token is not this grant's current one")
	}
	now := b.now()
	kept := g.Issued[:0]
	for _, t := range g.Issued {
		if now.Before(t.Expires) {
			kept = append(kept, t)
		}
	}
	g.Issued = append(kept, mcpIssued{Accessor: accessor, Expires: expires.UTC()})
	if n := len(g.Issued); n > mcpIssuedKept {
		g.Issued = g.Issued[n-mcpIssuedKept:]
	}
	if err := putMCPGrant(ctx, req.Storage, g); err != nil {
		return nil, err
	}
	return nil, nil
}

const pathMCPHelpDesc = `
MCP clients (Claude, Claude Code, VS Code, Cursor and others) sign in to the
portal's /mcp/<org> by OAuth: the portal is their authorization server, and
a person approves each client for one of the org's agents. The approval is
a grant here, mcp/grants/<id>: which agent, which client and redirect URI,
the resource (RFC 8707), the code's hash and PKCE challenge, and a secret ID
of the agent's AppRole role, which is never returned.

mcp/token is unauthenticated: the client holds a code or a refresh token,
not a Vault token. It redeems a code once (PKCE S256, same client, redirect
URI and resource), or a refresh token once (each use rotates it; a spent one
presented again ends the grant), and answers a new refresh token and the
agent's login sealed to the portal's edge key. The portal logs in with it:
the access token the client gets is a Vault token of the agent, so Vault
authorizes every tool call and audits it. mcp/token/issued records that
token's accessor, so that deleting the grant (disconnect) can answer which
tokens the person's portal revokes.
`
