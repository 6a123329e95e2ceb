package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Revocation styles, by the service catalog's revoke_style.
const (
	RevokeRFC7009 = "rfc7009" // POST token=... to revoke_url
	RevokeGitHub  = "github"  // DELETE /applications/{client_id}/token, basic auth
	RevokeSlack   = "slack"   // auth.revoke with the token as bearer
	RevokeBearer  = "bearer"  // POST revoke_url with the access token as bearer, 2xx is done (Dropbox)
	RevokeNone    = "none"    // the provider has no per-token revocation
)

// Receipt says what a revocation ended at the provider and what it could
// not, for people to act on.
type Receipt struct {
	Provider   string   `json:"provider"`
	Method     string   `json:"method"`
	Revoked    []string `json:"revoked"`
	NotRevoked []string `json:"not_revoked"`
	Reason     string   `json:"reason,omitempty"`
}

// NewReceipt is an empty receipt.
func NewReceipt(name, method string) *Receipt {
	return &Receipt{Provider: name, Method: method, Revoked: []string{}, NotRevoked: []string{}}
}

func (r *Receipt) revoked(what string)    { r.Revoked = append(r.Revoked, what) }
func (r *Receipt) notRevoked(what string) { r.NotRevoked = append(r.NotRevoked, what) }

// Because adds a reason.
func (r *Receipt) Because(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if r.Reason == "" {
		r.Reason = msg
	} else {
		r.Reason += "; " + msg
	}
}

// Held marks t's tokens as not revoked.
func (r *Receipt) Held(t Tokens) {
	if t.Refresh != "" {
		r.notRevoked("refresh_token")
	}
	if t.Access != "" {
		r.notRevoked("access_token")
	}
}

// AsMap is the receipt as a Vault response field.
func (r *Receipt) AsMap() map[string]interface{} {
	return map[string]interface{}{
		"provider":    r.Provider,
		"method":      r.Method,
		"revoked":     r.Revoked,
		"not_revoked": r.NotRevoked,
		"reason":      r.Reason,
	}
}

func (h *HTTP) Revoke(ctx context.Context, name string, spec *Spec, app App, t Tokens) *Receipt {
	method := spec.RevokeStyle
	if method == "" {
		method = RevokeNone
	}
	r := NewReceipt(name, method)
	switch method {
	case RevokeRFC7009:
		h.revokeRFC7009(ctx, spec, app, t, r)
	case RevokeGitHub:
		h.revokeGitHub(ctx, spec, app, t, r)
	case RevokeSlack:
		h.revokeSlack(ctx, spec, t, r)
	case RevokeBearer:
		h.revokeBearer(ctx, spec, t, r)
	default:
		r.Held(t)
		until := "its expiry"
		if !t.Expiry.IsZero() {
			until = t.Expiry.UTC().Format(time.RFC3339)
		}
		r.Because("%s has no per-token revocation: the tokens were deleted here, but the access token stays valid until %s and the grant stays listed in the account's app permissions until the user or an administrator removes it there", name, until)
	}
	return r
}

// revokeRFC7009 revokes the refresh token, then the access token (RFC 7009
// says revoking a refresh token SHOULD revoke its access tokens; not every
// provider does).
func (h *HTTP) revokeRFC7009(ctx context.Context, spec *Spec, app App, t Tokens, r *Receipt) {
	refreshRevoked := false
	for _, tk := range []struct{ kind, token string }{{"refresh_token", t.Refresh}, {"access_token", t.Access}} {
		if tk.token == "" {
			continue
		}
		form := url.Values{"token": {tk.token}, "token_type_hint": {tk.kind}}
		// The client authenticates as at the token endpoint.
		switch spec.TokenAuthMethod {
		case AuthSecretBasic:
		case AuthNone:
			form.Set("client_id", app.ClientID)
		default:
			form.Set("client_id", app.ClientID)
			form.Set("client_secret", app.ClientSecret)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, spec.RevokeURL, strings.NewReader(form.Encode()))
		if err != nil {
			r.notRevoked(tk.kind)
			r.Because("revoke_url is not usable")
			continue
		}
		if spec.TokenAuthMethod == AuthSecretBasic {
			// RFC 6749 2.3.1: both parts form-encoded first.
			req.SetBasicAuth(url.QueryEscape(app.ClientID), url.QueryEscape(app.ClientSecret))
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "application/json")
		status, body, err := h.revocationCall(req)
		switch {
		case err != nil:
			r.notRevoked(tk.kind)
			r.Because("%s: %s", tk.kind, err)
		case status == http.StatusOK || status == http.StatusNoContent:
			r.revoked(tk.kind)
			refreshRevoked = refreshRevoked || tk.kind == "refresh_token"
		case refreshRevoked && tk.kind == "access_token" && errorCode(body) == "invalid_token":
			// Google answers invalid_token for an access token that went
			// with the refresh token just revoked.
			r.revoked(tk.kind)
		default:
			r.notRevoked(tk.kind)
			r.Because("%s: the provider answered HTTP %d%s", tk.kind, status, codeSuffix(body, tk.token, app.ClientSecret))
		}
	}
}

// revokeGitHub deletes the grant's token: DELETE
// /applications/{client_id}/token with the app's basic auth and the access
// token in the body. GitHub deletes the token's refresh token with it.
func (h *HTTP) revokeGitHub(ctx context.Context, spec *Spec, app App, t Tokens, r *Receipt) {
	if t.Access == "" {
		r.notRevoked("refresh_token")
		r.Because("GitHub revokes by access token, and the credential holds none")
		return
	}
	target := strings.ReplaceAll(spec.RevokeURL, "{client_id}", url.PathEscape(app.ClientID))
	body, _ := json.Marshal(map[string]string{"access_token": t.Access})
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, target, bytes.NewReader(body))
	if err != nil {
		r.notRevoked("access_token")
		r.Because("revoke_url is not usable")
		return
	}
	req.SetBasicAuth(app.ClientID, app.ClientSecret)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/vnd.github+json")
	status, _, err := h.revocationCall(req)
	switch {
	case err != nil:
		markTokens(t, r.notRevoked)
		r.Because("%s", err)
	case status == http.StatusNoContent || status == http.StatusOK:
		markTokens(t, r.revoked)
	case status == http.StatusNotFound:
		markTokens(t, r.notRevoked)
		r.Because("GitHub does not know the access token (it expired or was already revoked); remove the authorization in the account's GitHub settings if it is still listed")
	default:
		markTokens(t, r.notRevoked)
		r.Because("GitHub answered HTTP %d", status)
	}
}

// revokeSlack calls auth.revoke with the access token as its own bearer
// credential; Slack revokes the token (and a rotating token's refresh
// token with it), and says so with ok, whatever the HTTP status.
func (h *HTTP) revokeSlack(ctx context.Context, spec *Spec, t Tokens, r *Receipt) {
	h.revokeWithBearer(ctx, spec, t, r, "Slack", func(status int, body []byte) (bool, string) {
		var ans struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &ans)
		switch {
		case status == http.StatusOK && ans.OK:
			return true, ""
		case ans.Error != "":
			return false, "Slack answered " + Clip(Scrub(ans.Error, []string{t.Access, t.Refresh}), 80)
		}
		return false, fmt.Sprintf("Slack answered HTTP %d", status)
	})
}

// revokeBearer posts to revoke_url with the access token as its own
// bearer credential; a 2xx means the provider ended the token and its
// refresh token (Dropbox).
func (h *HTTP) revokeBearer(ctx context.Context, spec *Spec, t Tokens, r *Receipt) {
	h.revokeWithBearer(ctx, spec, t, r, "the provider", func(status int, _ []byte) (bool, string) {
		if status >= 200 && status < 300 {
			return true, ""
		}
		return false, fmt.Sprintf("the provider answered HTTP %d", status)
	})
}

// revokeWithBearer is one revocation call authenticated by the access
// token itself; judge reads the answer.
func (h *HTTP) revokeWithBearer(ctx context.Context, spec *Spec, t Tokens, r *Receipt, who string, judge func(status int, body []byte) (bool, string)) {
	if t.Access == "" {
		r.notRevoked("refresh_token")
		r.Because("%s revokes by access token, and the credential holds none", who)
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, spec.RevokeURL, nil)
	if err != nil {
		r.notRevoked("access_token")
		r.Because("revoke_url is not usable")
		return
	}
	req.Header.Set("Authorization", "Bearer "+t.Access)
	status, body, err := h.revocationCall(req)
	if err != nil {
		markTokens(t, r.notRevoked)
		r.Because("%s", err)
		return
	}
	if ok, reason := judge(status, body); ok {
		markTokens(t, r.revoked)
	} else {
		markTokens(t, r.notRevoked)
		r.Because("%s", reason)
	}
}

// revocationCall sends req and returns the status and a bounded body. Its
// error names no secret: only the failure's kind.
func (h *HTTP) revocationCall(req *http.Request) (int, []byte, error) {
	resp, err := h.client.Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return 0, nil, fmt.Errorf("the provider did not answer in time")
		}
		return 0, nil, fmt.Errorf("the provider could not be reached")
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, body, nil
}

func errorCode(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error
}

// codeSuffix is the error code of a provider's answer, for a receipt,
// without the secrets sent in the request.
func codeSuffix(body []byte, sent ...string) string {
	if c := Scrub(errorCode(body), sent); c != "" {
		return " (" + Clip(c, 80) + ")"
	}
	return ""
}

// markTokens marks the tokens that one revocation call ends: the access
// token, and the refresh token the provider revokes with it.
func markTokens(t Tokens, mark func(string)) {
	mark("access_token")
	if t.Refresh != "" {
		mark("refresh_token")
	}
}
