package oauthserver

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ory/fosite"
)

// Quirks make the token endpoint misbehave the way real providers do. The
// zero value is a standards-following server (fosite's behaviour).
type Quirks struct {
	// ErrorsWithHTTP200 (GitHub): token errors answer HTTP 200 with the
	// usual error body instead of 400/401.
	ErrorsWithHTTP200 bool
	// FormEncodedUnlessJSONAccept (GitHub): token responses, success and
	// error, are application/x-www-form-urlencoded unless the request's
	// Accept header names application/json.
	FormEncodedUnlessJSONAccept bool
	// SlackOKFalse (Slack): errors answer HTTP 200 with
	// {"ok":false,"error":"invalid_refresh_token"}-style bodies; successes
	// carry "ok":true beside the token fields.
	SlackOKFalse bool
	// OmitExpiresIn: token responses carry no expires_in (the token still
	// expires after the configured lifespan).
	OmitExpiresIn bool
	// OmitRefreshTokenOnRefresh (Google): a refresh response carries no
	// refresh_token and nothing rotates: the presented refresh token and
	// earlier access tokens keep working.
	OmitRefreshTokenOnRefresh bool
	// SingleUseRefreshTokens (Discord, GitHub Apps): each refresh returns a
	// new refresh token and a second use of an old one fails with
	// invalid_grant, but only that request fails: the newest token of the
	// family stays valid. Without this quirk fosite's stricter reuse
	// detection applies: reuse also revokes the whole family.
	SingleUseRefreshTokens bool
	// TokenDelay delays every token-endpoint answer (slow provider).
	TokenDelay time.Duration
	// FailNextTokenCalls makes the next N token-endpoint requests fail with
	// TokenFailStatus (default 503) and a temporarily_unavailable body,
	// before fosite sees them. Quirks() reports how many are left.
	FailNextTokenCalls int
	TokenFailStatus    int
}

// Provider presets, for adapter tests.
var (
	GitHubQuirks    = Quirks{ErrorsWithHTTP200: true, FormEncodedUnlessJSONAccept: true}
	GitHubAppQuirks = Quirks{ErrorsWithHTTP200: true, FormEncodedUnlessJSONAccept: true, SingleUseRefreshTokens: true}
	SlackQuirks     = Quirks{SlackOKFalse: true}
	DiscordQuirks   = Quirks{SingleUseRefreshTokens: true}
	GoogleQuirks    = Quirks{OmitRefreshTokenOnRefresh: true}
)

// SetQuirks replaces all quirks; safe while requests are in flight (each
// request uses the quirks in force when it arrived).
func (s *Server) SetQuirks(q Quirks) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quirks = q
	s.failLeft = q.FailNextTokenCalls
}

// Quirks returns the quirks in force; FailNextTokenCalls is the number of
// injected failures still to come.
func (s *Server) Quirks() Quirks {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.quirks
	q.FailNextTokenCalls = s.failLeft
	return q
}

// beginTokenCall counts the call and decides, atomically, whether it is one
// of the injected failures.
func (s *Server) beginTokenCall(grant string) (q Quirks, fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenCalls++
	s.grantCalls[grant]++
	q = s.quirks
	if s.failLeft > 0 {
		s.failLeft--
		fail = true
	}
	return q, fail
}

func acceptsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	noStore(w)
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeForm(w http.ResponseWriter, status int, m map[string]any) {
	v := url.Values{}
	for k, x := range m {
		v.Set(k, toString(x))
	}
	noStore(w)
	w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(v.Encode()))
}

func toString(x any) string {
	switch t := x.(type) {
	case string:
		return t
	default:
		b, _ := json.Marshal(t)
		return string(b)
	}
}

// writeTokenSuccess renders fosite's access response through the quirks.
func (s *Server) writeTokenSuccess(w http.ResponseWriter, r *http.Request, ar fosite.AccessRequester, resp fosite.AccessResponder, grant string, q Quirks) {
	// ToMap hands back the responder's own map, so edits here reach
	// fosite's writer below.
	m := resp.ToMap()
	if q.OmitExpiresIn {
		delete(m, "expires_in")
	}
	if grant == GrantRefreshToken && q.OmitRefreshTokenOnRefresh {
		delete(m, "refresh_token")
	}
	if q.SlackOKFalse {
		m["ok"] = true
	}
	s.logf("oauthserver: token grant=%s ok", grant)
	if q.FormEncodedUnlessJSONAccept && !acceptsJSON(r) {
		writeForm(w, http.StatusOK, m)
		return
	}
	s.provider.WriteAccessResponse(r.Context(), w, ar, resp)
}

// writeTokenError renders a fosite error through the quirks.
func (s *Server) writeTokenError(w http.ResponseWriter, r *http.Request, ar fosite.AccessRequester, grant string, q Quirks, err error) {
	rfc := fosite.ErrorToRFC6749Error(err)
	s.logf("oauthserver: token grant=%s error=%s", grant, rfc.ErrorField)
	if grant == GrantRefreshToken && rfc.ErrorField == "invalid_grant" {
		s.mu.Lock()
		s.refreshRefusals++
		s.mu.Unlock()
	}
	status := rfc.CodeField
	if q.ErrorsWithHTTP200 {
		status = http.StatusOK
	}
	switch {
	case q.SlackOKFalse:
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": slackError(rfc.ErrorField, grant)})
	case q.FormEncodedUnlessJSONAccept && !acceptsJSON(r):
		writeForm(w, status, map[string]any{"error": rfc.ErrorField, "error_description": rfc.GetDescription()})
	case q.ErrorsWithHTTP200:
		// fosite writes the status from the error itself.
		e := *rfc
		e.CodeField = http.StatusOK
		s.provider.WriteAccessError(r.Context(), w, ar, &e)
	default:
		s.provider.WriteAccessError(r.Context(), w, ar, err)
	}
}

// slackError maps an RFC 6749 error code to the one Slack's oauth.v2.access
// would send.
func slackError(code, grant string) string {
	switch code {
	case "invalid_grant":
		if grant == GrantRefreshToken {
			return "invalid_refresh_token"
		}
		return "invalid_code"
	case "invalid_client":
		return "invalid_client_id"
	case "unsupported_grant_type":
		return "invalid_grant_type"
	}
	return code
}
