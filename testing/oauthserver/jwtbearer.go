package oauthserver

import (
	"context"
	"crypto/rsa"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
)

// JWTBearerGrant records one successful JWT-bearer token request.
type JWTBearerGrant struct {
	ServiceAccount string   // the assertion's iss (client_email)
	Subject        string   // the assertion's sub: the impersonated user under domain-wide delegation, else ""
	Scopes         []string // granted scopes
}

// maxAssertionLifetime is Google's limit on exp - iat.
const maxAssertionLifetime = time.Hour

// jwtBearerHandler is the Google service-account flavour of RFC 7523 as a
// fosite token-endpoint handler. fosite's own rfc7523 handler does not fit
// Google's assertions: it demands a sub claim (Google's is optional and
// means delegation), keys keyed by (iss, sub), and scopes as a form field
// (Google puts them in the assertion's scope claim). Token issuance and
// storage stay fosite's, so these tokens introspect and revoke like others.
type jwtBearerHandler struct {
	s      *Server
	helper *oauth2.HandleHelper
	config *fosite.Config
}

var _ fosite.TokenEndpointHandler = (*jwtBearerHandler)(nil)

func (s *Server) jwtBearerFactory(config fosite.Configurator, storage interface{}, strategy interface{}) interface{} {
	return &jwtBearerHandler{
		s: s,
		helper: &oauth2.HandleHelper{
			AccessTokenStrategy: strategy.(oauth2.AccessTokenStrategy),
			AccessTokenStorage:  storage.(oauth2.AccessTokenStorage),
			Config:              config,
		},
		config: s.config,
	}
}

func (h *jwtBearerHandler) CanHandleTokenEndpointRequest(_ context.Context, r fosite.AccessRequester) bool {
	return r.GetGrantTypes().ExactOne(GrantJWTBearer)
}

// CanSkipClientAuth: Google's token requests for service accounts carry no
// client credentials; the signed assertion is the authentication.
func (h *jwtBearerHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return true
}

// HandleTokenEndpointRequest checks a service-account assertion as Google
// does (RFC 7523). Long on purpose: each check answers with its own error.
func (h *jwtBearerHandler) HandleTokenEndpointRequest(ctx context.Context, r fosite.AccessRequester) error {
	if !h.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	assertion := r.GetRequestForm().Get("assertion")
	if assertion == "" {
		return fosite.ErrInvalidRequest.WithHint("The assertion parameter is missing.")
	}
	tok, err := jwt.ParseSigned(assertion, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return fosite.ErrInvalidGrant.WithHint("The assertion is not an RS256-signed JWT.")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil || unverified.Issuer == "" {
		return fosite.ErrInvalidGrant.WithHint("The assertion has no iss claim.")
	}
	keys := h.s.serviceAccountKeys(unverified.Issuer)
	if len(keys) == 0 {
		return fosite.ErrInvalidGrant.WithHint("Invalid grant: account not found.")
	}

	var claims jwt.Claims
	var extra struct {
		Scope string `json:"scope"`
	}
	verified := false
	for _, k := range keys {
		if tok.Claims(k, &claims, &extra) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return fosite.ErrInvalidGrant.WithHint("Invalid JWT Signature.")
	}
	if claims.Expiry == nil || claims.IssuedAt == nil {
		return fosite.ErrInvalidGrant.WithHint("The assertion needs exp and iat claims.")
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{
		Issuer:      unverified.Issuer,
		AnyAudience: jwt.Audience{h.config.TokenURL},
		Time:        time.Now(),
	}, 30*time.Second); err != nil {
		return fosite.ErrInvalidGrant.WithHintf("Invalid JWT: %s.", err.Error())
	}
	if claims.Expiry.Time().Sub(claims.IssuedAt.Time()) > maxAssertionLifetime {
		return fosite.ErrInvalidGrant.WithHint("Invalid JWT: expiration time must be at most one hour after issue time.")
	}

	scopes := append(strings.Fields(extra.Scope), r.GetRequestedScopes()...)
	if len(scopes) == 0 {
		return fosite.ErrInvalidScope.WithHint("Empty or missing scope not allowed.")
	}
	for _, sc := range scopes {
		if !r.GetGrantedScopes().Has(sc) {
			r.GrantScope(sc)
		}
	}

	// fosite's storage and introspection expect a client on every request;
	// the service account is that client.
	if req, ok := r.(*fosite.AccessRequest); ok && req.Client == nil {
		req.Client = &fosite.DefaultClient{
			ID:         claims.Issuer,
			GrantTypes: []string{GrantJWTBearer},
			Scopes:     []string{"*"},
		}
	}

	sess, ok := r.GetSession().(*fosite.DefaultSession)
	if !ok {
		return fosite.ErrServerError.WithDebug("unexpected session type")
	}
	// The account the token acts for: the delegated user if any, else the
	// service account itself.
	who := claims.Subject
	if who == "" {
		who = claims.Issuer
	}
	sess.Subject = who
	sess.Username = who
	sess.Extra = map[string]interface{}{
		"id": who, "email": who, "login": who,
		"service_account": claims.Issuer, "delegated_subject": claims.Subject,
	}
	sess.SetExpiresAt(fosite.AccessToken, time.Now().UTC().Add(h.config.AccessTokenLifespan).Round(time.Second))
	return nil
}

func (h *jwtBearerHandler) PopulateTokenEndpointResponse(ctx context.Context, r fosite.AccessRequester, resp fosite.AccessResponder) error {
	if !h.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	if _, err := h.helper.IssueAccessToken(ctx, h.config.AccessTokenLifespan, r, resp); err != nil {
		return fosite.ErrServerError.WithWrap(err).WithDebug(err.Error())
	}
	sess := r.GetSession().(*fosite.DefaultSession)
	sa, _ := sess.Extra["service_account"].(string)
	sub, _ := sess.Extra["delegated_subject"].(string)
	h.s.recordJWTGrant(JWTBearerGrant{ServiceAccount: sa, Subject: sub, Scopes: append([]string(nil), r.GetGrantedScopes()...)})
	return nil
}

func (s *Server) serviceAccountKeys(email string) []*rsa.PublicKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*rsa.PublicKey(nil), s.saKeys[email]...)
}

func (s *Server) recordJWTGrant(g JWTBearerGrant) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jwtGrants = append(s.jwtGrants, g)
}

// JWTBearerGrants lists the successful JWT-bearer grants, oldest first.
func (s *Server) JWTBearerGrants() []JWTBearerGrant {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]JWTBearerGrant(nil), s.jwtGrants...)
}
