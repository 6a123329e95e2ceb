// Package provider speaks OAuth 2.0 to providers for the engine: the
// authorize URL, the code exchange, refresh, the client credentials grant,
// revocation, the account a grant belongs to and discovery, with each
// provider's quirks adapted on the wire. The engine holds Vault paths and
// the lifecycle of grants; it reaches providers only through Client, which
// has a fake for tests.
package provider

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Spec is a provider's OAuth endpoints and quirks, as the service catalog
// holds them.
type Spec struct {
	AuthURL  string `json:"auth_url,omitempty"`
	TokenURL string `json:"token_url"`
	// RefreshURL, when set, is where refresh_token grants go instead of
	// TokenURL (Figma).
	RefreshURL  string `json:"refresh_url,omitempty"`
	RevokeURL   string `json:"revoke_url,omitempty"`
	RevokeStyle string `json:"revoke_style,omitempty"`
	// UserinfoURL answers with the account the grant belongs to.
	UserinfoURL    string              `json:"userinfo_url,omitempty"`
	DefaultScopes  []string            `json:"default_scopes,omitempty"`
	ScopeSets      map[string][]string `json:"scope_sets,omitempty"`
	ScopeSeparator string              `json:"scope_separator,omitempty"`
	// AuthParams are extra authorize parameters (Google's access_type).
	AuthParams map[string]string `json:"auth_params,omitempty"`
	PKCE       bool              `json:"pkce,omitempty"`
	// ErrorsWith200: the token endpoint reports errors with HTTP 200.
	ErrorsWith200 bool `json:"errors_with_200,omitempty"`
	// AcceptJSON: the token endpoint answers form-encoded unless asked for
	// JSON.
	AcceptJSON bool `json:"accept_json,omitempty"`
	// OKField: responses carry "ok": false on failure (Slack).
	OKField bool `json:"ok_field,omitempty"`
	// SingleUseRefresh: each refresh token works once (rotation).
	SingleUseRefresh bool `json:"single_use_refresh,omitempty"`
	// KeepAlive refreshes a grant that was idle this long, before the
	// provider expires unused refresh tokens.
	KeepAlive Duration `json:"keep_alive,omitempty"`

	// DiscoveryURL is the provider's OpenID Connect or RFC 8414 metadata;
	// the engine fills the endpoints left out from it.
	DiscoveryURL string `json:"discovery_url,omitempty"`
	// Issuer is the provider's issuer identifier: a callback's RFC 9207
	// iss must equal it.
	Issuer string `json:"issuer,omitempty"`
	// IssRequired: the provider sends iss on every authorization response
	// (its metadata says so), so a callback without it is refused.
	IssRequired bool `json:"iss_required,omitempty"`
	// TokenAuthMethod is how the client authenticates at the token and
	// revocation endpoints: client_secret_post (the default),
	// client_secret_basic, or none (a public client, with PKCE).
	TokenAuthMethod string `json:"token_auth_method,omitempty"`

	// Resource (RFC 8707) goes on the authorize request and on every token
	// request, code and refresh alike: a remote MCP server's tokens are
	// bound to it, as the MCP authorization spec requires.
	Resource string `json:"resource,omitempty"`
	// RegistrationURL is the authorization server's RFC 7591 endpoint,
	// where an app can be registered (a remote MCP server's, found by
	// discovery).
	RegistrationURL string `json:"registration_url,omitempty"`
	// CIMD says the authorization server takes client ID metadata
	// documents: an app's client ID may be the URL of the portal's.
	CIMD bool `json:"client_id_metadata_document_supported,omitempty"`
}

// Client authentication methods (RFC 7591's names).
const (
	AuthSecretPost  = "client_secret_post"
	AuthSecretBasic = "client_secret_basic"
	AuthNone        = "none"
)

// Public says whether the provider's clients send no secret.
func (s *Spec) Public() bool { return s.TokenAuthMethod == AuthNone }

// Scopes joins scopes with the provider's separator.
func (s *Spec) Scopes(scopes []string) string {
	sep := s.ScopeSeparator
	if sep == "" {
		sep = " "
	}
	return strings.Join(scopes, sep)
}

// App is an OAuth client registration at a provider.
type App struct {
	ClientID     string
	ClientSecret string
	// Public: the client sends no secret, whatever the provider's other
	// clients do (a client ID metadata document's client).
	Public bool
}

// Duration reads and writes Go duration strings in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	if d == 0 {
		return []byte(`""`), nil
	}
	return json.Marshal(time.Duration(d).String())
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"720h\"")
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("duration %q is not a positive Go duration such as \"720h\"", s)
	}
	*d = Duration(v)
	return nil
}

// Validate checks the endpoints and the revocation style.
func (s *Spec) Validate() error {
	for field, raw := range map[string]string{
		"auth_url": s.AuthURL, "token_url": s.TokenURL, "refresh_url": s.RefreshURL,
		"revoke_url": s.RevokeURL, "userinfo_url": s.UserinfoURL,
		"discovery_url": s.DiscoveryURL, "issuer": s.Issuer,
		"resource": s.Resource, "registration_url": s.RegistrationURL,
	} {
		if raw == "" {
			continue
		}
		u, err := url.Parse(strings.ReplaceAll(raw, "{client_id}", "x"))
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("%s must be an absolute http or https URL", field)
		}
	}
	switch s.RevokeStyle {
	case "", RevokeNone:
	case RevokeRFC7009, RevokeGitHub, RevokeSlack, RevokeBearer:
		if s.RevokeURL == "" {
			return fmt.Errorf("revoke_style %s needs revoke_url", s.RevokeStyle)
		}
	default:
		return fmt.Errorf("revoke_style must be rfc7009, github, slack, bearer or none, not %q", s.RevokeStyle)
	}
	if s.ScopeSeparator != "" && s.ScopeSeparator != " " && s.ScopeSeparator != "," {
		return fmt.Errorf("scope_separator must be a space or a comma")
	}
	switch s.TokenAuthMethod {
	case "", AuthSecretPost, AuthSecretBasic:
	case AuthNone:
		if !s.PKCE {
			return fmt.Errorf("token_auth_method none (a public client) needs pkce: true, since nothing else binds the code to the client")
		}
	default:
		return fmt.Errorf("token_auth_method must be client_secret_basic, client_secret_post or none, not %q", s.TokenAuthMethod)
	}
	if s.IssRequired && s.Issuer == "" {
		return fmt.Errorf("iss_required needs issuer")
	}
	if strings.Contains(s.Resource, "#") {
		return fmt.Errorf("resource must have no fragment (RFC 8707)")
	}
	return nil
}
