package oauthserver

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/ory/fosite"
)

func (s *Server) countRevoke() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revokeCalls++
}

// handleRevoke is RFC 7009 revocation, done by fosite: the client
// authenticates, and revoking either token of a grant revokes the family.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	s.countRevoke()
	s.flowMu.Lock()
	defer s.flowMu.Unlock()
	err := s.provider.NewRevocationRequest(r.Context(), r)
	s.provider.WriteRevocationResponse(r.Context(), w, err)
}

// handleGitHubRevoke imitates GitHub's "delete an app token":
// DELETE /applications/{client_id}/token, basic auth client_id:client_secret,
// JSON body {"access_token": "..."}; 204 on success.
func (s *Server) handleGitHubRevoke(w http.ResponseWriter, r *http.Request) {
	s.countRevoke()
	id, secret, ok := r.BasicAuth()
	if !ok || id != r.PathValue("client_id") || !s.clientSecretOK(r.Context(), id, secret) {
		w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Bad credentials"})
		return
	}
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil || body.AccessToken == "" {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"message": "Validation Failed"})
		return
	}
	s.flowMu.Lock()
	defer s.flowMu.Unlock()
	ar, ok := s.activeRequest(r.Context(), body.AccessToken)
	if !ok || ar.GetClient().GetID() != id {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	s.revokeFamily(r.Context(), ar.GetID())
	w.WriteHeader(http.StatusNoContent)
}

// handleSlackRevoke imitates Slack's auth.revoke: the token to revoke is
// also the credential (bearer header or form field "token"); the answer is
// always HTTP 200 with an ok flag.
func (s *Server) handleSlackRevoke(w http.ResponseWriter, r *http.Request) {
	s.countRevoke()
	token := ""
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		token = strings.TrimSpace(h[7:])
	} else {
		_ = r.ParseForm()
		token = r.Form.Get("token")
	}
	if token == "" {
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": "not_authed"})
		return
	}
	s.flowMu.Lock()
	defer s.flowMu.Unlock()
	ar, ok := s.activeRequest(r.Context(), token)
	if !ok {
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	s.revokeFamily(r.Context(), ar.GetID())
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "revoked": true})
}

// activeRequest validates an access or refresh token through fosite.
func (s *Server) activeRequest(ctx context.Context, token string) (fosite.AccessRequester, bool) {
	_, ar, err := s.provider.IntrospectToken(ctx, token, fosite.AccessToken, newSession(Identity{}))
	if err != nil {
		return nil, false
	}
	return ar, true
}

// revokeFamily revokes every token of one grant, as fosite's RFC 7009
// handler does.
func (s *Server) revokeFamily(ctx context.Context, requestID string) {
	_ = s.store.RevokeRefreshToken(ctx, requestID)
	_ = s.store.RevokeAccessToken(ctx, requestID)
}

func (s *Server) clientSecretOK(ctx context.Context, id, secret string) bool {
	c, err := s.store.GetClient(ctx, id)
	if err != nil || c.IsPublic() {
		return false
	}
	return sha256Hasher{}.Compare(ctx, c.GetHashedSecret(), []byte(secret)) == nil
}

// Introspect reports whether token is an access or refresh token this
// server issued that is still active (not expired, rotated or revoked).
func (s *Server) Introspect(token string) bool {
	_, ok := s.activeRequest(context.Background(), token)
	return ok
}

// IsRevoked reports whether token is an access or refresh token this server
// issued that was revoked: through a revocation endpoint, or with its whole
// family after refresh-token or code reuse. A token that merely expired or
// was rotated away is not revoked.
func (s *Server) IsRevoked(token string) bool {
	ctx := context.Background()
	st, ok := s.store.lookupState(s.strategy.AccessTokenSignature(ctx, token), s.strategy.RefreshTokenSignature(ctx, token))
	return ok && st == stateRevoked
}

// RevokeAll revokes every token the server issued, as a person does who
// removes the app's access at the provider: refreshes fail with
// invalid_grant from then on.
func (s *Server) RevokeAll() {
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	for _, m := range []map[string]*tokenEntry{s.store.access, s.store.refresh} {
		for _, e := range m {
			if e.state == stateActive {
				e.state = stateRevoked
			}
		}
	}
}
