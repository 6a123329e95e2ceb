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
	writeJSON(w, http.StatusOK, id)
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
