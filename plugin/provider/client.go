package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/oauth2/google"
)

// maxBody bounds what is read of a provider's answer.
const maxBody = 1 << 20

// Client is the OAuth protocol as the engine uses it. Errors are *Error,
// whose messages name no secret.
type Client interface {
	// AuthCodeURL is where a person grants access.
	AuthCodeURL(spec *Spec, app App, r AuthRequest) string
	// Exchange trades an authorization code for tokens.
	Exchange(ctx context.Context, spec *Spec, app App, redirectURL, code, verifier string) (*Token, *Error)
	// Refresh trades a refresh token for new tokens.
	Refresh(ctx context.Context, spec *Spec, app App, refreshToken string) (*Token, *Error)
	// Revoke ends a grant at the provider, its way (spec.RevokeStyle), and
	// says what was and was not revoked. name is the provider's name for
	// people.
	Revoke(ctx context.Context, name string, spec *Spec, app App, t Tokens) *Receipt
	// Account asks who granted access; best effort.
	Account(ctx context.Context, spec *Spec, accessToken string) (Account, error)
	// ServiceAccountToken mints an access token from a GCP service-account
	// key (the JWT bearer grant), acting as subject when set.
	ServiceAccountToken(ctx context.Context, key []byte, scopes []string, subject string) (*Token, *Error)
	// Discover reads a provider's OpenID Connect or RFC 8414 metadata.
	Discover(ctx context.Context, url string) (*Discovery, *Error)
	// DiscoverMCP finds a remote MCP server's authorization server and
	// resource (RFC 9728, then RFC 8414 or OpenID Connect).
	DiscoverMCP(ctx context.Context, mcpURL string) (*MCPServer, *Error)
	// Register registers a client by RFC 7591.
	Register(ctx context.Context, regURL, name, redirectURL, authMethod string) (*Registration, *Error)
	// ClientCredentials mints an app-only token (RFC 6749 4.4).
	ClientCredentials(ctx context.Context, spec *Spec, app App, scopes []string) (*Token, *Error)
	// GitHubAppToken mints a GitHub App installation token.
	GitHubAppToken(ctx context.Context, in GitHubInstallation) (*Token, *Error)
}

// AuthRequest is one authorize request.
type AuthRequest struct {
	RedirectURL string
	State       string
	// Verifier is the PKCE verifier; empty: no PKCE.
	Verifier string
	Scopes   []string
}

// Token is a token endpoint's answer.
type Token struct {
	AccessToken  string
	RefreshToken string
	TokenType    string
	// ExpiresIn is the lifetime the provider stated, in seconds; 0: none.
	ExpiresIn int64
	// Scope is the granted scope as the provider wrote it.
	Scope string
}

// Tokens are a grant's tokens, for revocation.
type Tokens struct {
	Access, Refresh string
	// Expiry is the access token's, for the receipt; zero when unknown.
	Expiry time.Time
}

// Account is who granted access.
type Account struct {
	// Subject is the provider's stable ID of the account (sub, id).
	Subject string
	// Label is what people recognise: an email, else a login or name.
	Label string
}

// HTTP is the Client that speaks to providers over HTTP.
type HTTP struct {
	// client follows no redirect, so a token request and its client
	// secret never go to a host the catalog did not name; the engine
	// builds it on the egress guard.
	client  *http.Client
	timeout time.Duration
}

// New is a Client over c; timeout bounds each call.
func New(c *http.Client, timeout time.Duration) *HTTP {
	return &HTTP{client: c, timeout: timeout}
}

// SetTimeout changes the bound of each call (tests shorten it).
func (h *HTTP) SetTimeout(d time.Duration) { h.timeout = d }

// Timeout is the bound of each call.
func (h *HTTP) Timeout() time.Duration { return h.timeout }

// context carries the HTTP client x/oauth2 uses for spec's token endpoint,
// with the provider's quirks adapted on the wire.
func (h *HTTP) context(ctx context.Context, spec *Spec) context.Context {
	base := h.client.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c := &http.Client{
		Transport:     quirkTransport{base: base, spec: spec, adapters: tokenAdapters(spec)},
		CheckRedirect: h.client.CheckRedirect,
		Timeout:       h.timeout,
	}
	return context.WithValue(ctx, oauth2.HTTPClient, c)
}

// config is the x/oauth2 configuration of app at spec's provider. The
// client authenticates as spec's token_auth_method says: in the request
// body by default (every preset accepts it, and no request is sent twice
// to probe the style), with HTTP basic, or not at all (public clients).
func config(spec *Spec, app App, redirectURL string) *oauth2.Config {
	style, secret := oauth2.AuthStyleInParams, app.ClientSecret
	switch spec.TokenAuthMethod {
	case AuthSecretBasic:
		style = oauth2.AuthStyleInHeader
	case AuthNone:
		secret = ""
	}
	if app.Public {
		style, secret = oauth2.AuthStyleInParams, ""
	}
	return &oauth2.Config{
		ClientID:     app.ClientID,
		ClientSecret: secret,
		RedirectURL:  redirectURL,
		Endpoint: oauth2.Endpoint{
			AuthURL:   spec.AuthURL,
			TokenURL:  spec.TokenURL,
			AuthStyle: style,
		},
	}
}

func (h *HTTP) AuthCodeURL(spec *Spec, app App, r AuthRequest) string {
	var opts []oauth2.AuthCodeOption
	if len(r.Scopes) > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("scope", spec.Scopes(r.Scopes)))
	}
	keys := make([]string, 0, len(spec.AuthParams))
	for k := range spec.AuthParams {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		opts = append(opts, oauth2.SetAuthURLParam(k, spec.AuthParams[k]))
	}
	if spec.Resource != "" {
		opts = append(opts, oauth2.SetAuthURLParam("resource", spec.Resource))
	}
	if r.Verifier != "" {
		opts = append(opts, oauth2.S256ChallengeOption(r.Verifier))
	}
	return config(spec, app, r.RedirectURL).AuthCodeURL(r.State, opts...)
}

func (h *HTTP) Exchange(ctx context.Context, spec *Spec, app App, redirectURL, code, verifier string) (*Token, *Error) {
	var opts []oauth2.AuthCodeOption
	if verifier != "" {
		opts = append(opts, oauth2.VerifierOption(verifier))
	}
	tok, err := config(spec, app, redirectURL).Exchange(h.context(ctx, spec), code, opts...)
	if err != nil {
		return nil, classify(err, "exchanging the code", code, verifier, app.ClientSecret)
	}
	return tokenOf(tok), nil
}

func (h *HTTP) Refresh(ctx context.Context, spec *Spec, app App, refreshToken string) (*Token, *Error) {
	conf := config(spec, app, "")
	if spec.RefreshURL != "" {
		conf.Endpoint.TokenURL = spec.RefreshURL
	}
	// An empty access token makes x/oauth2 refresh at once.
	tok, err := conf.TokenSource(h.context(ctx, spec), &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		pe := classify(err, "refresh", refreshToken, app.ClientSecret)
		if pe.Kind == GrantDead && spec.SingleUseRefresh {
			pe.Msg += "; the provider's refresh tokens are single-use, so a refresh whose answer was lost also ends the grant"
		}
		return nil, pe
	}
	return tokenOf(tok), nil
}

func (h *HTTP) ClientCredentials(ctx context.Context, spec *Spec, app App, scopes []string) (*Token, *Error) {
	conf := config(spec, app, "")
	cc := &clientcredentials.Config{
		ClientID: conf.ClientID, ClientSecret: conf.ClientSecret, TokenURL: spec.TokenURL,
		AuthStyle: conf.Endpoint.AuthStyle,
	}
	if len(scopes) > 0 {
		// Joined with the provider's separator, as the authorize URL is.
		cc.EndpointParams = map[string][]string{"scope": {spec.Scopes(scopes)}}
	}
	tok, err := cc.Token(h.context(ctx, spec))
	if err != nil {
		return nil, classify(err, "client credentials grant", app.ClientSecret)
	}
	return tokenOf(tok), nil
}

// tokenOf reads x/oauth2's token. expires_in is read from the wire value,
// not from x/oauth2's Expiry, because that uses the wall clock and the
// engine's clock is injectable.
func tokenOf(tok *oauth2.Token) *Token {
	t := &Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: tok.TokenType, ExpiresIn: tok.ExpiresIn}
	if t.ExpiresIn <= 0 {
		switch v := tok.Extra("expires_in").(type) {
		case float64:
			t.ExpiresIn = int64(v)
		case string:
			t.ExpiresIn, _ = strconv.ParseInt(v, 10, 64)
		case json.Number:
			t.ExpiresIn, _ = v.Int64()
		}
	}
	if s, ok := tok.Extra("scope").(string); ok {
		t.Scope = s
	}
	return t
}

func (h *HTTP) ServiceAccountToken(ctx context.Context, key []byte, scopes []string, subject string) (*Token, *Error) {
	conf, err := google.JWTConfigFromJSON(key, scopes...)
	if err != nil {
		return nil, &Error{Kind: Refused, Msg: "the service-account key cannot be used"}
	}
	conf.Subject = subject
	hc := &http.Client{Transport: h.client.Transport, CheckRedirect: h.client.CheckRedirect, Timeout: h.timeout}
	tok, err := conf.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, hc)).Token()
	if err != nil {
		return nil, classify(err, "minting a service-account token")
	}
	t := &Token{AccessToken: tok.AccessToken, TokenType: tok.TokenType}
	// x/oauth2/jwt computes Expiry with the wall clock; the lifetime is
	// what the engine applies to its own.
	if !tok.Expiry.IsZero() {
		t.ExpiresIn = int64(time.Until(tok.Expiry).Round(time.Second) / time.Second)
	}
	return t, nil
}

// ErrNoUserinfo: the provider has no userinfo endpoint.
var ErrNoUserinfo = errors.New("the provider has no userinfo endpoint")

func (h *HTTP) Account(ctx context.Context, spec *Spec, accessToken string) (Account, error) {
	if spec.UserinfoURL == "" || accessToken == "" {
		return Account{}, ErrNoUserinfo
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, spec.UserinfoURL, nil)
	if err != nil {
		return Account{}, err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return Account{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Account{}, fmt.Errorf("userinfo answered HTTP %d", resp.StatusCode)
	}
	var m map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&m); err != nil {
		return Account{}, fmt.Errorf("userinfo's answer is not JSON")
	}
	return accountOf(m), nil
}

// accountOf reads a userinfo answer: the subject from sub or id, and the
// most recognisable label: an email, else a login or user name, else the
// subject.
func accountOf(m map[string]any) Account {
	field := func(k string) string {
		var s string
		switch v := m[k].(type) {
		case string:
			s = v
		case float64:
			s = strconv.FormatFloat(v, 'f', -1, 64)
		}
		s = strings.TrimSpace(s)
		if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return ""
		}
		return Clip(s, 256)
	}
	var a Account
	for _, k := range []string{"sub", "id", "oid"} {
		if a.Subject = field(k); a.Subject != "" {
			break
		}
	}
	for _, k := range []string{"email", "mail", "userPrincipalName", "login", "username", "preferred_username", "name"} {
		if a.Label = field(k); a.Label != "" {
			break
		}
	}
	if a.Label == "" {
		a.Label = a.Subject
	}
	return a
}
