package credentials

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/clankteam/credentials/plugin/egress"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

// Timing of calls to OAuth providers.
const (
	// providerCallTimeout bounds one HTTP call to a provider.
	providerCallTimeout = 30 * time.Second
	// refreshFlightTimeout bounds one shared refresh, including waiting
	// for the credential's lock; it outlives any one caller's context so
	// that a caller giving up does not fail the others sharing it.
	refreshFlightTimeout = 2 * time.Minute
	// maxProviderBody bounds what is read of a provider's answer.
	maxProviderBody = 1 << 20
)

// oauthRuntime is the engine's in-memory OAuth state on this node.
type oauthRuntime struct {
	// client calls providers; it follows no redirect, so a token request
	// and its client secret never go to a host the catalog did not name.
	client *http.Client
	// callTimeout bounds one provider call; tests shorten it.
	callTimeout time.Duration

	// flights shares one refresh among the concurrent users of one
	// credential (keyed by name; forced refreshes have keys of their own).
	flights singleflight.Group

	// heldMu guards held.
	heldMu sync.Mutex
	// held keeps grants a provider issued whose storing failed, by
	// credential name, so that a rotated refresh token is not lost: they
	// are stored on the credential's next use or the next tick.
	held map[string]heldGrant

	sched    refreshSchedule
	saTokens saTokenCache
}

// heldGrant is a grant not yet stored, and the refresh token it replaced.
type heldGrant struct {
	grant *oauthGrant
	// fromHash is the SHA-256 of the refresh token the grant came from: it
	// applies only while the stored grant is still that one.
	fromHash string
}

// newOAuthRuntime builds the provider client on the operator's dial guard:
// token, revocation, userinfo and service-account calls reach only public
// https endpoints, or the operator's private targets, and take no proxy
// from the environment.
func newOAuthRuntime(guard *egress.Guard) *oauthRuntime {
	return &oauthRuntime{
		client:      guard.Client(egress.ClientOptions{}),
		callTimeout: providerCallTimeout,
		held:        map[string]heldGrant{},
	}
}

func (o *oauthRuntime) hold(name string, g *oauthGrant, fromRefreshToken string) {
	o.heldMu.Lock()
	defer o.heldMu.Unlock()
	o.held[name] = heldGrant{grant: g, fromHash: tokenHash(fromRefreshToken)}
}

func (o *oauthRuntime) heldFor(name string) (heldGrant, bool) {
	o.heldMu.Lock()
	defer o.heldMu.Unlock()
	h, ok := o.held[name]
	return h, ok
}

func (o *oauthRuntime) dropHeld(name string) {
	o.heldMu.Lock()
	defer o.heldMu.Unlock()
	delete(o.held, name)
}

func (o *oauthRuntime) heldNames() []string {
	o.heldMu.Lock()
	defer o.heldMu.Unlock()
	names := make([]string, 0, len(o.held))
	for n := range o.held {
		names = append(names, n)
	}
	return names
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// providerContext carries the HTTP client x/oauth2 uses for spec's token
// endpoint, with the provider's quirks adapted on the wire.
func (o *oauthRuntime) providerContext(ctx context.Context, spec *oauthSpec) context.Context {
	c := &http.Client{
		Transport:     quirkTransport{base: o.client.Transport, spec: spec, adapters: tokenAdapters(spec)},
		CheckRedirect: o.client.CheckRedirect,
		Timeout:       o.callTimeout,
	}
	return context.WithValue(ctx, oauth2.HTTPClient, c)
}

// oauthConfig is the x/oauth2 configuration of app at svc's provider.
// Client credentials go in the request body, which every provider in the
// catalog accepts, so that no request is sent twice to probe the style.
func oauthConfig(svc *service, app *oauthApp, redirectURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     app.ClientID,
		ClientSecret: app.ClientSecret,
		RedirectURL:  redirectURL,
		Endpoint: oauth2.Endpoint{
			AuthURL:   svc.OAuth.AuthURL,
			TokenURL:  svc.OAuth.TokenURL,
			AuthStyle: oauth2.AuthStyleInParams,
		},
	}
}

// requestedScopes are the scopes a connect asks for: the app's, else the
// service's defaults.
func requestedScopes(svc *service, app *oauthApp) []string {
	if len(app.Scopes) > 0 {
		return app.Scopes
	}
	return svc.OAuth.DefaultScopes
}

func joinScopes(spec *oauthSpec, scopes []string) string {
	sep := spec.ScopeSeparator
	if sep == "" {
		sep = " "
	}
	return strings.Join(scopes, sep)
}

// splitScopes reads a granted-scope string, space- or comma-separated.
func splitScopes(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' })
}

// grantFromToken is the grant a token response gives at now. A response
// without a refresh token keeps the old one; one without expires_in gets
// the configured maximum lifetime when the grant can be refreshed (a token
// that cannot be refreshed and states no lifetime does not expire).
func grantFromToken(old *oauthGrant, tok *oauth2.Token, now time.Time, maxLifetime time.Duration) *oauthGrant {
	g := &oauthGrant{}
	if old != nil {
		*g = *old
	}
	g.AccessToken = tok.AccessToken
	if tok.RefreshToken != "" {
		g.RefreshToken = tok.RefreshToken
	}
	g.TokenType = tok.TokenType
	g.Expiry = time.Time{}
	if secs := expiresIn(tok); secs > 0 {
		g.Expiry = now.Add(time.Duration(secs) * time.Second)
	} else if g.RefreshToken != "" {
		g.Expiry = now.Add(maxLifetime)
	}
	if s, ok := tok.Extra("scope").(string); ok && s != "" {
		g.Scopes = splitScopes(s)
	}
	g.RefreshedAt = now
	g.RetryAt = time.Time{}
	g.RefreshFailures = 0
	g.RefreshError = ""
	g.ReconnectRequired = false
	return g
}

// expiresIn is the response's expires_in in seconds, 0 when absent. It is
// read from the wire value, not from x/oauth2's Expiry, because that uses
// the wall clock and the engine's clock is injectable.
func expiresIn(tok *oauth2.Token) int64 {
	if tok.ExpiresIn > 0 {
		return tok.ExpiresIn
	}
	switch v := tok.Extra("expires_in").(type) {
	case float64:
		return int64(v)
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	case json.Number:
		n, _ := v.Int64()
		return n
	}
	return 0
}

// quirkTransport adapts a provider's token endpoint to RFC 6749 on the
// wire, so that x/oauth2 sees standard answers: it asks for JSON where the
// catalog says the provider needs it, then passes the answer through the
// adapters of the provider's quirk families.
type quirkTransport struct {
	base     http.RoundTripper
	spec     *oauthSpec
	adapters []tokenAdapter
}

func (t quirkTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.spec.AcceptJSON {
		req = req.Clone(req.Context())
		req.Header.Set("Accept", "application/json")
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil || len(t.adapters) == 0 {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProviderBody))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the token endpoint's answer: %w", err)
	}
	tr := &tokenResponse{status: resp.StatusCode, header: resp.Header.Clone(), body: body}
	for _, adapt := range t.adapters {
		adapt(tr)
	}
	resp.StatusCode = tr.status
	resp.Status = fmt.Sprintf("%d %s", tr.status, http.StatusText(tr.status))
	resp.Header = tr.header
	resp.Header.Del("Content-Length")
	resp.ContentLength = int64(len(tr.body))
	resp.Body = io.NopCloser(strings.NewReader(string(tr.body)))
	return resp, nil
}

// tokenResponse is a token endpoint's answer as the adapters see it.
type tokenResponse struct {
	status int
	header http.Header
	body   []byte
}

func (r *tokenResponse) setJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	r.body = b
	r.header.Set("Content-Type", "application/json")
}

func (r *tokenResponse) jsonBody() map[string]any {
	var m map[string]any
	if ct := r.header.Get("Content-Type"); !strings.Contains(ct, "json") && !strings.HasPrefix(strings.TrimSpace(string(r.body)), "{") {
		return nil
	}
	if json.Unmarshal(r.body, &m) != nil {
		return nil
	}
	return m
}

// tokenAdapter rewrites one quirk family's answers into RFC 6749's shape.
type tokenAdapter func(*tokenResponse)

// tokenAdapters picks the adapters spec's flags call for. Form-encoded
// answers (GitHub without Accept: application/json) are always turned into
// JSON, so that expires_in is read the same way for every provider.
func tokenAdapters(spec *oauthSpec) []tokenAdapter {
	a := []tokenAdapter{formToJSON}
	if spec.OKField {
		a = append(a, okFieldToStatus)
	}
	if spec.ErrorsWith200 {
		a = append(a, errorBodyToStatus)
	}
	return a
}

// formToJSON turns an application/x-www-form-urlencoded answer into JSON,
// with expires_in as a number.
func formToJSON(r *tokenResponse) {
	ct := r.header.Get("Content-Type")
	if !strings.HasPrefix(ct, "application/x-www-form-urlencoded") && !strings.HasPrefix(ct, "text/plain") {
		return
	}
	vals, err := url.ParseQuery(string(r.body))
	if err != nil {
		return
	}
	m := map[string]any{}
	for k := range vals {
		v := vals.Get(k)
		if k == "expires_in" || k == "refresh_token_expires_in" {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				m[k] = n
				continue
			}
		}
		m[k] = v
	}
	r.setJSON(m)
}

// okFieldToStatus (Slack): {"ok": false, "error": "..."} with HTTP 200 is a
// failure; it gets the status a standard server would send. A success whose
// token is only under authed_user (user-token installs) gets it lifted to
// the top level.
func okFieldToStatus(r *tokenResponse) {
	m := r.jsonBody()
	if m == nil {
		return
	}
	ok, present := m["ok"].(bool)
	if !present {
		return
	}
	if !ok {
		code, _ := m["error"].(string)
		if code == "" {
			code = "unknown_error"
		}
		r.status = slackErrorStatus(code)
		r.setJSON(map[string]any{"error": code})
		return
	}
	if _, has := m["access_token"]; !has {
		if u, isMap := m["authed_user"].(map[string]any); isMap {
			for _, k := range []string{"access_token", "refresh_token", "token_type", "expires_in", "scope"} {
				if v, has := u[k]; has {
					m[k] = v
				}
			}
			r.setJSON(m)
		}
	}
}

func slackErrorStatus(code string) int {
	switch code {
	case "ratelimited":
		return http.StatusTooManyRequests
	case "internal_error", "fatal_error", "service_unavailable", "request_timeout":
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

// errorBodyToStatus (GitHub): an error body with HTTP 200 gets the status
// a standard server would send.
func errorBodyToStatus(r *tokenResponse) {
	if r.status != http.StatusOK {
		return
	}
	m := r.jsonBody()
	if code, _ := m["error"].(string); code != "" {
		r.status = http.StatusBadRequest
		if isTransientCode(code) {
			r.status = http.StatusServiceUnavailable
		}
	}
}

// Kinds of provider failures; each decides what happens to the grant.
type failureKind int

const (
	// failTransient: the provider or the network failed; retry later.
	failTransient failureKind = iota
	// failGrantDead: the grant is gone (invalid_grant and its kin);
	// a person must reconnect.
	failGrantDead
	// failRefused: the provider refused the request for another reason
	// (the app's client credentials, scopes, a malformed request): a
	// person must look, but the grant may still be alive.
	failRefused
)

// providerError is a classified failure of a provider call. Its message is
// for people and holds no secret: the provider's error code and
// description scrubbed of what the engine sent, or the HTTP status, never
// the body.
type providerError struct {
	kind   failureKind
	code   string
	status int
	msg    string
	cause  error
}

func (e *providerError) Error() string { return e.msg }
func (e *providerError) Unwrap() error { return e.cause }

// Error codes meaning the grant is dead: RFC 6749's invalid_grant and the
// providers' own names for it.
var grantDeadCodes = map[string]bool{
	"invalid_grant":         true,
	"invalid_refresh_token": true, // Slack
	"bad_refresh_token":     true, // GitHub
	"token_revoked":         true, // Slack
	"token_expired":         true, // Slack
	"expired_token":         true,
	"token_inactive":        true, // Ory (fosite, Hydra): revoked or reused
	"bad_verification_code": true, // GitHub, authorization codes
	"invalid_code":          true, // Slack, authorization codes
}

func isTransientCode(code string) bool {
	switch code {
	case "temporarily_unavailable", "server_error", "slow_down", "ratelimited", "internal_error", "service_unavailable":
		return true
	}
	return false
}

// classifyTokenError turns an error of x/oauth2 into a providerError. sent
// are the secrets the engine sent in the failed request: they are scrubbed
// from the provider's text.
func classifyTokenError(err error, what string, sent ...string) *providerError {
	var pe *providerError
	if errors.As(err, &pe) {
		return pe
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		code, desc := re.ErrorCode, re.ErrorDescription
		if code == "" {
			// x/oauth2/jwt leaves the body unparsed.
			var body struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if json.Unmarshal(re.Body, &body) == nil {
				code, desc = body.Error, body.Description
			}
		}
		// Scrubbed before clipping, so that no part of a secret is left.
		desc = clip(scrubSent(desc, sent), 200)
		e := &providerError{code: clip(scrubSent(code, sent), 80), status: status, cause: err}
		switch {
		case grantDeadCodes[code]:
			e.kind = failGrantDead
		case isTransientCode(code) || status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout:
			e.kind = failTransient
		default:
			e.kind = failRefused
		}
		e.msg = fmt.Sprintf("%s: the provider answered HTTP %d", what, status)
		if e.code != "" {
			e.msg += " " + e.code
		}
		if desc != "" {
			e.msg += " (" + desc + ")"
		}
		return e
	}
	e := &providerError{kind: failTransient, cause: err}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		e.msg = what + ": the provider did not answer in time"
	case errors.Is(err, context.Canceled):
		e.msg = what + ": cancelled"
	default:
		// x/oauth2's other errors (unreachable host, unparsable answer)
		// name no secret; scrubbed all the same.
		e.msg = fmt.Sprintf("%s: %s", what, clip(scrubSent(err.Error(), sent), 300))
	}
	return e
}

// scrubSent removes from a provider's text every secret the engine sent it
// (a refresh or access token, the client secret, an authorization code, a
// PKCE verifier), so that a provider quoting its request back cannot put a
// secret into a stored refresh error, a response or the log. Longer secrets
// go first, so that one containing another is removed whole; URL-encoded
// copies go too.
func scrubSent(text string, sent []string) string {
	sorted := slices.Clone(sent)
	slices.SortFunc(sorted, func(a, b string) int { return len(b) - len(a) })
	for _, secret := range sorted {
		if secret == "" {
			continue
		}
		text = strings.ReplaceAll(text, secret, "[redacted]")
		if q := url.QueryEscape(secret); q != secret {
			text = strings.ReplaceAll(text, q, "[redacted]")
		}
	}
	return text
}

// fetchAccount asks spec's userinfo endpoint who granted the access, for
// people to see. Best effort: "" when the service has no such endpoint or
// it fails.
func (b *backend) fetchAccount(ctx context.Context, spec *oauthSpec, accessToken string) string {
	if spec.UserinfoURL == "" || accessToken == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, b.oauth.callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, spec.UserinfoURL, nil)
	if err != nil {
		return ""
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := b.oauth.client.Do(req)
	if err != nil {
		b.logger.Warn("fetching the account identity failed", "url", spec.UserinfoURL, "error", err)
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.logger.Warn("fetching the account identity failed", "url", spec.UserinfoURL, "status", resp.StatusCode)
		return ""
	}
	var m map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxProviderBody)).Decode(&m); err != nil {
		return ""
	}
	return accountName(m)
}

// accountName picks the most recognisable identity a userinfo answer
// holds: an email, else a login or user name, else an ID.
func accountName(m map[string]any) string {
	for _, k := range []string{"email", "mail", "userPrincipalName", "login", "username", "preferred_username", "name", "sub", "id"} {
		var s string
		switch v := m[k].(type) {
		case string:
			s = v
		case float64:
			s = strconv.FormatFloat(v, 'f', -1, 64)
		}
		if s = strings.TrimSpace(s); s != "" && !hasControl(s) {
			return clip(s, 256)
		}
	}
	return ""
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// sortedKeys returns m's keys in order, so authorize URLs are stable.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
