package oauthserver

import (
	"net/http"

	"github.com/ory/fosite"
)

// handleUserinfo returns the account identity behind a bearer access token,
// the way a provider's "who am I" endpoint does.
func (s *Server) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	token := fosite.AccessTokenFromRequest(r)
	if token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="oauthserver"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_request", "error_description": "missing bearer token"})
		return
	}
	use, ar, err := s.provider.IntrospectToken(r.Context(), token, fosite.AccessToken, newSession(Identity{}))
	// A refresh token must not work as a bearer credential.
	if err != nil || use != fosite.AccessToken {
		w.Header().Set("WWW-Authenticate", `Bearer realm="oauthserver", error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	id := Identity{}
	if sess, ok := ar.GetSession().(*fosite.DefaultSession); ok {
		id.ID, _ = sess.Extra["id"].(string)
		id.Email, _ = sess.Extra["email"].(string)
		id.Login, _ = sess.Extra["login"].(string)
	}
	writeJSON(w, http.StatusOK, map[string]string{"sub": id.ID, "id": id.ID, "email": id.Email, "login": id.Login})
}

// handleIntrospect is RFC 7662 introspection, done by fosite; the caller
// authenticates as a registered client.
func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	ir, err := s.provider.NewIntrospectionRequest(r.Context(), r, newSession(Identity{}))
	if err != nil {
		s.provider.WriteIntrospectionError(r.Context(), w, err)
		return
	}
	s.provider.WriteIntrospectionResponse(r.Context(), w, ir)
}

// handleDiscovery serves the OpenID Connect discovery document (also at
// RFC 8414's address).
func (s *Server) handleDiscovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                         s.Issuer(),
		"authorization_endpoint":                         s.AuthURL(),
		"token_endpoint":                                 s.TokenURL(),
		"revocation_endpoint":                            s.RevokeURL(),
		"introspection_endpoint":                         s.IntrospectURL(),
		"userinfo_endpoint":                              s.UserinfoURL(),
		"registration_endpoint":                          s.RegisterURL(),
		"response_types_supported":                       []string{"code"},
		"grant_types_supported":                          []string{GrantAuthorizationCode, GrantRefreshToken, GrantJWTBearer, "client_credentials"},
		"code_challenge_methods_supported":               []string{"S256"},
		"token_endpoint_auth_methods_supported":          []string{"client_secret_basic", "client_secret_post", "none"},
		"scopes_supported":                               []string{"openid", "email", "offline_access"},
		"authorization_response_iss_parameter_supported": s.opts.IssInCallback,
		"client_id_metadata_document_supported":          s.opts.CIMD,
	})
}
