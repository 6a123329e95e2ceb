package credentials

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

	"github.com/hashicorp/vault/sdk/logical"
)

// revokeTimeout bounds one revocation call; disconnect and delete wait for
// it while holding the credential's lock.
const revokeTimeout = 15 * time.Second

// revocationReceipt says what a disconnect or delete revoked at the
// provider and what it could not, for people to act on.
type revocationReceipt struct {
	Provider   string   `json:"provider"`
	Method     string   `json:"method"`
	Revoked    []string `json:"revoked"`
	NotRevoked []string `json:"not_revoked"`
	Reason     string   `json:"reason,omitempty"`
}

func (r *revocationReceipt) revoked(what string)    { r.Revoked = append(r.Revoked, what) }
func (r *revocationReceipt) notRevoked(what string) { r.NotRevoked = append(r.NotRevoked, what) }

func (r *revocationReceipt) because(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if r.Reason == "" {
		r.Reason = msg
	} else {
		r.Reason += "; " + msg
	}
}

func (r *revocationReceipt) asMap() map[string]interface{} {
	return map[string]interface{}{
		"provider":    r.Provider,
		"method":      r.Method,
		"revoked":     r.Revoked,
		"not_revoked": r.NotRevoked,
		"reason":      r.Reason,
	}
}

// revokeGrant revokes c's grant at its provider, the provider's way
// (the service's revoke_style), and reports what was and was not revoked.
// The caller holds c's lock and drops the tokens afterwards whatever the
// outcome: the receipt tells a person what is left to revoke by hand.
func (b *backend) revokeGrant(ctx context.Context, s logical.Storage, c *credential) map[string]interface{} {
	r := &revocationReceipt{Revoked: []string{}, NotRevoked: []string{}}
	g := c.OAuth
	if h, ok := b.oauth.heldFor(c.Name); ok && g != nil && tokenHash(g.RefreshToken) == h.fromHash {
		// A newer grant the provider issued but storage refused: it is
		// the live one.
		g = h.grant
	}
	if !g.connected() {
		r.Method = "none"
		r.Reason = "nothing to revoke: the credential holds no tokens"
		return r.asMap()
	}
	held := func() {
		if g.RefreshToken != "" {
			r.notRevoked("refresh_token")
		}
		if g.AccessToken != "" {
			r.notRevoked("access_token")
		}
	}
	svc, err := b.getService(ctx, s, c.Service)
	if err != nil || svc == nil || svc.OAuth == nil {
		held()
		r.because("the service %q cannot be read, so its revocation endpoint is unknown", c.Service)
		return r.asMap()
	}
	r.Provider = svc.DisplayName
	r.Method = svc.OAuth.RevokeStyle
	if r.Method == "" {
		r.Method = revokeNone
	}
	app, err := getApp(ctx, s, c.App)
	if err != nil || app == nil {
		held()
		r.because("the app %q cannot be read, so the engine cannot authenticate to the provider", c.App)
		return r.asMap()
	}
	ctx, cancel := context.WithTimeout(ctx, revokeTimeout)
	defer cancel()

	switch r.Method {
	case revokeRFC7009:
		b.revokeRFC7009(ctx, svc, app, g, r)
	case revokeGitHub:
		b.revokeGitHub(ctx, svc, app, g, r)
	case revokeSlack:
		b.revokeSlack(ctx, svc, g, r)
	default:
		held()
		until := "its expiry"
		if !g.Expiry.IsZero() {
			until = g.Expiry.UTC().Format(time.RFC3339)
		}
		r.because("%s has no per-token revocation: the tokens were deleted here, but the access token stays valid until %s and the grant stays listed in the account's app permissions until the user or an administrator removes it there", svc.DisplayName, until)
	}
	b.logger.Info("grant revoked at the provider", "name", c.Name, "method", r.Method, "revoked", strings.Join(r.Revoked, ","), "not_revoked", strings.Join(r.NotRevoked, ","))
	return r.asMap()
}

// revokeRFC7009 revokes the refresh token, then the access token (RFC 7009
// says revoking a refresh token SHOULD revoke its access tokens; not every
// provider does).
func (b *backend) revokeRFC7009(ctx context.Context, svc *service, app *oauthApp, g *oauthGrant, r *revocationReceipt) {
	refreshRevoked := false
	for _, t := range []struct{ kind, token string }{{"refresh_token", g.RefreshToken}, {"access_token", g.AccessToken}} {
		if t.token == "" {
			continue
		}
		form := url.Values{
			"token":           {t.token},
			"token_type_hint": {t.kind},
			"client_id":       {app.ClientID},
			"client_secret":   {app.ClientSecret},
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, svc.OAuth.RevokeURL, strings.NewReader(form.Encode()))
		if err != nil {
			r.notRevoked(t.kind)
			r.because("revoke_url is not usable")
			continue
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "application/json")
		status, body, err := b.revocationCall(req)
		switch {
		case err != nil:
			r.notRevoked(t.kind)
			r.because("%s: %s", t.kind, err)
		case status == http.StatusOK || status == http.StatusNoContent:
			r.revoked(t.kind)
			refreshRevoked = refreshRevoked || t.kind == "refresh_token"
		case refreshRevoked && t.kind == "access_token" && errorCode(body) == "invalid_token":
			// Google answers invalid_token for an access token that went
			// with the refresh token just revoked.
			r.revoked(t.kind)
		default:
			r.notRevoked(t.kind)
			r.because("%s: the provider answered HTTP %d%s", t.kind, status, codeSuffix(body, t.token, app.ClientSecret))
		}
	}
}

// revokeGitHub deletes the grant's token: DELETE
// /applications/{client_id}/token with the app's basic auth and the access
// token in the body. GitHub deletes the token's refresh token with it.
func (b *backend) revokeGitHub(ctx context.Context, svc *service, app *oauthApp, g *oauthGrant, r *revocationReceipt) {
	if g.AccessToken == "" {
		r.notRevoked("refresh_token")
		r.because("GitHub revokes by access token, and the credential holds none")
		return
	}
	target := strings.ReplaceAll(svc.OAuth.RevokeURL, "{client_id}", url.PathEscape(app.ClientID))
	body, _ := json.Marshal(map[string]string{"access_token": g.AccessToken})
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, target, bytes.NewReader(body))
	if err != nil {
		r.notRevoked("access_token")
		r.because("revoke_url is not usable")
		return
	}
	req.SetBasicAuth(app.ClientID, app.ClientSecret)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/vnd.github+json")
	status, _, err := b.revocationCall(req)
	switch {
	case err != nil:
		markGrantTokens(g, r.notRevoked)
		r.because("%s", err)
	case status == http.StatusNoContent || status == http.StatusOK:
		markGrantTokens(g, r.revoked)
	case status == http.StatusNotFound:
		markGrantTokens(g, r.notRevoked)
		r.because("GitHub does not know the access token (it expired or was already revoked); remove the authorization in the account's GitHub settings if it is still listed")
	default:
		markGrantTokens(g, r.notRevoked)
		r.because("GitHub answered HTTP %d", status)
	}
}

// revokeSlack calls auth.revoke with the access token as its own bearer
// credential; Slack revokes the token (and a rotating token's refresh
// token with it).
func (b *backend) revokeSlack(ctx context.Context, svc *service, g *oauthGrant, r *revocationReceipt) {
	if g.AccessToken == "" {
		r.notRevoked("refresh_token")
		r.because("Slack revokes by access token, and the credential holds none")
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, svc.OAuth.RevokeURL, nil)
	if err != nil {
		r.notRevoked("access_token")
		r.because("revoke_url is not usable")
		return
	}
	req.Header.Set("Authorization", "Bearer "+g.AccessToken)
	status, body, err := b.revocationCall(req)
	var ans struct {
		OK      bool   `json:"ok"`
		Revoked bool   `json:"revoked"`
		Error   string `json:"error"`
	}
	_ = json.Unmarshal(body, &ans)
	switch {
	case err != nil:
		markGrantTokens(g, r.notRevoked)
		r.because("%s", err)
	case status == http.StatusOK && ans.OK:
		markGrantTokens(g, r.revoked)
	case ans.Error != "":
		markGrantTokens(g, r.notRevoked)
		r.because("Slack answered %s", clip(scrubSent(ans.Error, []string{g.AccessToken, g.RefreshToken}), 80))
	default:
		markGrantTokens(g, r.notRevoked)
		r.because("Slack answered HTTP %d", status)
	}
}

// revocationCall sends req and returns the status and a bounded body. Its
// error names no secret: only the failure's kind.
func (b *backend) revocationCall(req *http.Request) (int, []byte, error) {
	resp, err := b.oauth.client.Do(req)
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
	if c := scrubSent(errorCode(body), sent); c != "" {
		return " (" + clip(c, 80) + ")"
	}
	return ""
}

// markGrantTokens marks the tokens that one revocation call ends: the
// access token, and the refresh token the provider revokes with it.
func markGrantTokens(g *oauthGrant, mark func(string)) {
	mark("access_token")
	if g.RefreshToken != "" {
		mark("refresh_token")
	}
}
