package oauthserver

import (
	"context"
	"net/http"
	"time"

	"github.com/ory/fosite"
)

// handleToken is the token endpoint: fosite runs the grant; quirks shape
// timing, injected failures and the wire format around it.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	// fosite parses the form too; parsing first lets a failed call be
	// counted under its grant type.
	_ = r.ParseForm()
	grant := r.PostForm.Get("grant_type")
	s.mu.Lock()
	s.resources = append(s.resources, r.PostForm.Get("resource"))
	s.mu.Unlock()
	q, fail := s.beginTokenCall(grant)

	if q.TokenDelay > 0 {
		t := time.NewTimer(q.TokenDelay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if fail {
		status := q.TokenFailStatus
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		s.logf("oauthserver: token grant=%s injected status=%d", grant, status)
		writeJSON(w, status, map[string]string{"error": "temporarily_unavailable", "error_description": "injected failure"})
		return
	}

	s.flowMu.Lock()
	defer s.flowMu.Unlock()

	ctx := r.Context()
	if grant == GrantRefreshToken {
		if q.OmitRefreshTokenOnRefresh {
			ctx = context.WithValue(ctx, keepRefreshKey, true)
		}
		// fosite's own reuse handling revokes the family; single-use
		// providers only refuse the stale token, so answer before fosite.
		if q.SingleUseRefreshTokens && s.refreshTokenUsed(ctx, r.PostForm.Get("refresh_token")) {
			s.writeTokenError(w, r, nil, grant, q, fosite.ErrInvalidGrant.WithHint("The refresh token was already used."))
			return
		}
	}

	ar, err := s.provider.NewAccessRequest(ctx, r, newSession(Identity{}))
	if err != nil {
		s.writeTokenError(w, r, ar, grant, q, err)
		return
	}
	resp, err := s.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		s.writeTokenError(w, r, ar, grant, q, err)
		return
	}
	s.writeTokenSuccess(w, r, ar, resp, grant, q)
}

// refreshTokenUsed reports whether token is a refresh token this server
// issued that has since been rotated away or revoked.
func (s *Server) refreshTokenUsed(ctx context.Context, token string) bool {
	if token == "" {
		return false
	}
	st, ok := s.store.lookupState("", s.strategy.RefreshTokenSignature(ctx, token))
	return ok && st != stateActive
}
