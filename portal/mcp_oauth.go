package portal

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"github.com/ory/fosite"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
)

// The portal is the OAuth 2.1 authorization server of its MCP server
// (/mcp/<org>), as MCP's authorization spec asks: MCP clients discover it
// from /mcp/<org>'s 401 (RFC 9728), register (a client ID metadata
// document, or RFC 7591 registration), send the person to /oauth/authorize,
// where they sign in and approve the client for one of the org's agents,
// and redeem the code at /oauth/token with PKCE (S256 only) for the
// resource (RFC 8707) /mcp/<org>.
//
// What the client gets is a Vault token of the agent: Vault authorizes and
// audits every tool call as for any agent. The refresh token and what the
// grant mints tokens with live in the engine (mcp/grants/<id>), so any
// portal instance serves any step. fosite parses and checks the protocol's
// requests and writes its answers; the grant's state is the engine's.

const (
	mcpScope      = "mcp"
	offlineAccess = "offline_access"
	oauthPrefix   = "/oauth"
	// mcpCodeTTL is how long an authorization code may be redeemed.
	mcpCodeTTL = time.Minute
)

// mcpAuth is the authorization server.
type mcpAuth struct {
	s        *Server
	provider fosite.OAuth2Provider
	clients  *mcpClients
}

func newMCPAuth(s *Server) *mcpAuth {
	a := &mcpAuth{s: s}
	a.clients = newMCPClients(s)
	cfg := &fosite.Config{
		EnforcePKCE:                    true,
		EnablePKCEPlainChallengeMethod: false,
		AuthorizeCodeLifespan:          mcpCodeTTL,
		ScopeStrategy:                  mcpScopeStrategy,
		AudienceMatchingStrategy:       fosite.DefaultAudienceMatchingStrategy,
		MinParameterEntropy:            fosite.MinParameterEntropy,
		SendDebugMessagesToClients:     false,
	}
	cfg.AuthorizeEndpointHandlers = fosite.AuthorizeEndpointHandlers{&mcpCodeHandler{}}
	cfg.TokenEndpointHandlers = fosite.TokenEndpointHandlers{&mcpTokenHandler{a: a}}
	a.provider = &fosite.Fosite{Store: a.clients, Config: cfg}
	return a
}

// mcpScopeStrategy grants the scopes this server knows: mcp, and
// offline_access (refresh tokens are always issued).
func mcpScopeStrategy(have []string, needle string) bool {
	return needle == mcpScope || needle == offlineAccess
}

// issuer is the authorization server's identifier: where its metadata
// is served from.
func (a *mcpAuth) issuer(r *http.Request) string { return a.s.publicBase(r) }

// resourceOf is the protected resource of org's MCP server.
func (a *mcpAuth) resourceOf(r *http.Request, org string) string {
	return a.s.publicBase(r) + "/mcp/" + org
}

// resourceMetadataURL is where org's protected-resource metadata is.
func (a *mcpAuth) resourceMetadataURL(r *http.Request, org string) string {
	return a.s.publicBase(r) + "/.well-known/oauth-protected-resource/mcp/" + org
}

// challenge is /mcp/<org>'s WWW-Authenticate for a request without a
// usable token: where the client learns how to get one.
func (a *mcpAuth) challenge(r *http.Request, org, oauthErr string) string {
	c := fmt.Sprintf(`Bearer resource_metadata=%q, scope=%q`, a.resourceMetadataURL(r, org), mcpScope)
	if oauthErr != "" {
		c += fmt.Sprintf(`, error=%q`, oauthErr)
	}
	return c
}

// handleWellKnown serves RFC 9728 and RFC 8414 metadata, and a JSON 404
// for any other well-known path: some clients probe them all and choke on
// an HTML page.
func (a *mcpAuth) handleWellKnown(w http.ResponseWriter, r *http.Request) {
	allowAnyOrigin(w)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	p := r.URL.Path
	switch {
	case p == "/.well-known/oauth-authorization-server" || p == "/.well-known/openid-configuration":
		writeJSON(w, http.StatusOK, a.serverMetadata(r))
	case p == "/.well-known/oauth-protected-resource":
		// The root form names the portal as a whole; the person picks the
		// org when approving.
		writeJSON(w, http.StatusOK, a.resourceMetadata(r, a.s.publicBase(r)))
	case strings.HasPrefix(p, "/.well-known/oauth-protected-resource/mcp/"):
		org := strings.TrimPrefix(p, "/.well-known/oauth-protected-resource/mcp/")
		if !contract.ValidOrgName(org) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "error_description": "no such resource: use /mcp/<org>"})
			return
		}
		writeJSON(w, http.StatusOK, a.resourceMetadata(r, a.resourceOf(r, org)))
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "error_description": "no such metadata document"})
	}
}

func (a *mcpAuth) serverMetadata(r *http.Request) *oauthex.AuthServerMeta {
	iss := a.issuer(r)
	return &oauthex.AuthServerMeta{
		Issuer:                                     iss,
		AuthorizationEndpoint:                      iss + oauthPrefix + "/authorize",
		TokenEndpoint:                              iss + oauthPrefix + "/token",
		RegistrationEndpoint:                       iss + oauthPrefix + "/register",
		ScopesSupported:                            []string{mcpScope, offlineAccess},
		ResponseTypesSupported:                     []string{"code"},
		ResponseModesSupported:                     []string{"query"},
		GrantTypesSupported:                        []string{"authorization_code", "refresh_token"},
		TokenEndpointAuthMethodsSupported:          []string{"none"},
		CodeChallengeMethodsSupported:              []string{"S256"},
		AuthorizationResponseIssParameterSupported: true,
		ClientIDMetadataDocumentSupported:          true,
		ServiceDocumentation:                       iss + "/",
	}
}

func (a *mcpAuth) resourceMetadata(r *http.Request, resource string) *oauthex.ProtectedResourceMetadata {
	return &oauthex.ProtectedResourceMetadata{
		Resource:               resource,
		AuthorizationServers:   []string{a.issuer(r)},
		ScopesSupported:        []string{mcpScope},
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "Credentials MCP server",
	}
}

// allowAnyOrigin lets browser-based clients read the answer: nothing in
// these endpoints depends on cookies.
func allowAnyOrigin(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version")
	h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
}

// mcpSession is the fosite session of one authorize or token request: the
// code the authorize handler answers with, and the token step's outcome.
type mcpSession struct {
	fosite.DefaultSession
	code string
}

// mcpCodeHandler answers an approved authorization request with the code
// the consent step wrote to the engine, and the issuer (RFC 9207).
type mcpCodeHandler struct{}

func (h *mcpCodeHandler) HandleAuthorizeEndpointRequest(ctx context.Context, ar fosite.AuthorizeRequester, resp fosite.AuthorizeResponder) error {
	if !ar.GetResponseTypes().ExactOne("code") {
		return nil
	}
	sess, ok := ar.GetSession().(*mcpSession)
	if !ok || sess.code == "" {
		return fosite.ErrServerError.WithHint("The authorization has no code.")
	}
	resp.AddParameter("code", sess.code)
	resp.AddParameter("state", ar.GetState())
	ar.SetResponseTypeHandled("code")
	return nil
}

// checkAuthorize applies what fosite leaves to the server: PKCE with S256
// (fosite's EnforcePKCE checks it at the token step, here it is the
// engine), and the resource, which must be this portal's MCP server.
func (a *mcpAuth) checkAuthorize(r *http.Request, ar fosite.AuthorizeRequester) (org string, err error) {
	f := ar.GetRequestForm()
	if f.Get("code_challenge") == "" || f.Get("code_challenge_method") != "S256" {
		return "", fosite.ErrInvalidRequest.WithHint("PKCE is required: send code_challenge with code_challenge_method=S256.")
	}
	if len(f.Get("code_challenge")) != 43 {
		return "", fosite.ErrInvalidRequest.WithHint("code_challenge must be the base64url SHA-256 of the verifier (43 characters).")
	}
	resource := strings.TrimSuffix(f.Get("resource"), "/")
	base := a.s.publicBase(r)
	switch {
	case resource == "":
		return "", errInvalidTarget("resource is required (RFC 8707): the MCP server's URL, " + base + "/mcp/<org>")
	case resource == base:
		return "", nil // the person picks the org
	}
	org, ok := strings.CutPrefix(resource, base+"/mcp/")
	if !ok || !contract.ValidOrgName(org) {
		return "", errInvalidTarget("resource " + resource + " is not an MCP server of this portal: use " + base + "/mcp/<org>")
	}
	return org, nil
}

func errInvalidTarget(hint string) *fosite.RFC6749Error {
	return (&fosite.RFC6749Error{ErrorField: "invalid_target", DescriptionField: "The requested resource is invalid.", CodeField: http.StatusBadRequest}).WithHint(hint)
}

// writeAuthorizeError answers an authorization request that failed: to
// the client's redirect URI with the issuer (RFC 9207) when the client and
// redirect URI are known to be genuine, else on a page for the person.
func (a *mcpAuth) writeAuthorizeError(w http.ResponseWriter, r *http.Request, ar fosite.AuthorizeRequester, err error) {
	rfc := fosite.ErrorToRFC6749Error(err)
	if ar == nil || !ar.IsRedirectURIValid() {
		a.s.renderError(w, r, rfc.CodeField, "The app's sign-in request cannot be completed: "+rfc.GetDescription())
		return
	}
	u := *ar.GetRedirectURI()
	q := u.Query()
	q.Set("error", rfc.ErrorField)
	q.Set("error_description", rfc.GetDescription())
	if st := ar.GetState(); st != "" {
		q.Set("state", st)
	}
	q.Set("iss", a.issuer(r))
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// mcpTokenHandler is the token step of both grants: the engine redeems
// the code or refresh token and answers the agent's login, sealed to this
// portal's edge key; the portal logs the agent in, and the Vault token it
// gets is the access token.
type mcpTokenHandler struct{ a *mcpAuth }

func (h *mcpTokenHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

func (h *mcpTokenHandler) CanHandleTokenEndpointRequest(_ context.Context, ar fosite.AccessRequester) bool {
	return ar.GetGrantTypes().ExactOne("authorization_code") || ar.GetGrantTypes().ExactOne("refresh_token")
}

func (h *mcpTokenHandler) HandleTokenEndpointRequest(_ context.Context, ar fosite.AccessRequester) error {
	f := ar.GetRequestForm()
	switch {
	case ar.GetGrantTypes().ExactOne("authorization_code") && (f.Get("code") == "" || f.Get("code_verifier") == ""):
		return fosite.ErrInvalidRequest.WithHint("code and code_verifier (PKCE) are required.")
	case ar.GetGrantTypes().ExactOne("refresh_token") && f.Get("refresh_token") == "":
		return fosite.ErrInvalidRequest.WithHint("refresh_token is required.")
	}
	return nil
}

func (h *mcpTokenHandler) PopulateTokenEndpointResponse(ctx context.Context, ar fosite.AccessRequester, resp fosite.AccessResponder) error {
	r, _ := ctx.Value(fosite.RequestContextKey).(*http.Request)
	tok, err := h.a.issue(ctx, r, ar)
	if err != nil {
		return err
	}
	resp.SetAccessToken(tok.access)
	resp.SetTokenType("Bearer")
	resp.SetExpiresIn(tok.ttl)
	resp.SetExtra("refresh_token", tok.refresh)
	resp.SetScopes(fosite.Arguments(strings.Fields(tok.scope)))
	return nil
}

// issued is what one token step gives the client.
type issued struct {
	access, refresh, scope string
	ttl                    time.Duration
}

// issue runs the token step against the engine of the grant's org.
func (a *mcpAuth) issue(ctx context.Context, r *http.Request, ar fosite.AccessRequester) (*issued, error) {
	f := ar.GetRequestForm()
	byCode := ar.GetGrantTypes().ExactOne("authorization_code")
	secret := f.Get("refresh_token")
	if byCode {
		secret = f.Get("code")
	}
	org, engineSecret, ok := splitGrantToken(secret)
	if !ok {
		return nil, fosite.ErrInvalidGrant.WithHint("The code or refresh token is not one this server issued.")
	}
	data := map[string]any{"client_id": ar.GetClient().GetID()}
	if byCode {
		data["grant_type"] = "authorization_code"
		data["code"], data["code_verifier"], data["redirect_uri"] = engineSecret, f.Get("code_verifier"), f.Get("redirect_uri")
		if res := strings.TrimSuffix(f.Get("resource"), "/"); r == nil || res != a.s.publicBase(r) {
			data["resource"] = res
		}
	} else {
		data["grant_type"], data["refresh_token"] = "refresh_token", engineSecret
	}
	key := a.s.cfg.EdgeKey
	if key == nil {
		return nil, fosite.ErrServerError.WithHint("This portal has no edge key (" + egress.EdgeKeyEnv + "): it cannot mint agents' tokens.")
	}
	data["edge_key"] = key.ID
	anon, err := a.s.vaultFor("")
	if err != nil {
		return nil, fosite.ErrServerError.WithWrap(err)
	}
	mount := contract.Mount(org)
	sec, err := anon.c.Logical().WriteWithContext(ctx, mount+"/mcp/token", data)
	if err != nil {
		return nil, a.engineRefusal(err)
	}
	grant, _ := sec.Data["grant"].(string)
	var login egress.MCPLogin
	sealed, _ := sec.Data[egress.FieldSealed].(string)
	if err := key.OpenFor(egress.MCPLoginInfo(mount, grant), sealed, &login); err != nil {
		return nil, fosite.ErrServerError.WithHint("The engine's answer could not be opened with this portal's edge key.")
	}
	auth, err := anon.c.Logical().WriteWithContext(ctx, "auth/approle/login", map[string]any{"role_id": login.RoleID, "secret_id": login.SecretID})
	if err != nil || auth == nil || auth.Auth == nil {
		a.s.logger.Warn("mcp token: the agent's login failed", "org", org, "grant", grant, "error", errText(err))
		return nil, fosite.ErrInvalidGrant.WithHint("The agent this client was approved for can no longer sign in (it was deleted, or its login revoked): approve the client again.")
	}
	out := &issued{access: auth.Auth.ClientToken, ttl: time.Duration(auth.Auth.LeaseDuration) * time.Second}
	engineRefresh, _ := sec.Data["refresh_token"].(string)
	out.refresh = grantToken(org, engineRefresh)
	out.scope, _ = sec.Data["scope"].(string)
	if _, err := anon.c.Logical().WriteWithContext(ctx, mount+"/mcp/token/issued", map[string]any{
		"refresh_token": engineRefresh, "accessor": auth.Auth.Accessor,
		"expires_at": time.Now().Add(out.ttl).UTC().Format(time.RFC3339),
	}); err != nil {
		// The token works; disconnecting the client would not revoke
		// it, so it is not handed out.
		a.revokeSelf(ctx, out.access)
		return nil, fosite.ErrServerError.WithHint("Recording the token failed; try again.")
	}
	a.s.logger.Info("mcp token issued", "org", org, "grant", grant, "grant_type", data["grant_type"])
	return out, nil
}

// revokeSelf ends a token the client never got.
func (a *mcpAuth) revokeSelf(ctx context.Context, token string) {
	v, err := a.s.vaultFor(token)
	if err == nil {
		_, _ = v.c.Logical().WriteWithContext(ctx, "auth/token/revoke-self", nil)
	}
}

// engineRefusal turns the engine's refusal of a token step into OAuth's
// words: the engine prefixes its refusals with the OAuth error code.
func (a *mcpAuth) engineRefusal(err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && len(re.Errors) > 0 {
		code, msg, _ := strings.Cut(re.Errors[0], ": ")
		switch code {
		case "invalid_grant":
			return fosite.ErrInvalidGrant.WithHint(msg)
		case "invalid_target":
			return errInvalidTarget(msg)
		case "unsupported_grant_type":
			return fosite.ErrUnsupportedGrantType.WithHint(msg)
		}
		return fosite.ErrInvalidRequest.WithHint(re.Errors[0])
	}
	a.s.logger.Warn("mcp token: the engine failed", "error", errText(err))
	return fosite.ErrServerError.WithHint("The token could not be issued; try again.")
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// handleToken is the token endpoint.
func (a *mcpAuth) handleToken(w http.ResponseWriter, r *http.Request) {
	allowAnyOrigin(w)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	ctx := context.WithValue(r.Context(), fosite.RequestContextKey, r)
	ar, err := a.provider.NewAccessRequest(ctx, r, &mcpSession{})
	if err != nil {
		a.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	resp, err := a.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		a.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	a.provider.WriteAccessResponse(ctx, w, ar, resp)
}

// A grant's codes and refresh tokens are "<org>.<grant id>.<random>" to
// the client, so the token step knows which org's engine to ask; the
// engine sees "<grant id>.<random>".
func grantToken(org, engineToken string) string { return org + "." + engineToken }

// splitGrantToken is grantToken's inverse.
func splitGrantToken(t string) (org, engineToken string, ok bool) {
	org, engineToken, ok = strings.Cut(t, ".")
	return org, engineToken, ok && contract.ValidOrgName(org) && engineToken != ""
}

// codeHash is how a code is written to the engine.
func codeHash(code string) string {
	sum := sha256.Sum256([]byte(code))
	return fmt.Sprintf("%x", sum)
}
