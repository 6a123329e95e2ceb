// Package catalog is what the engine knows of each service: the credential
// types it takes, where its API is, how a credential is put into a request,
// its OAuth endpoints and a call that proves a credential works. The
// presets are catalog.json; an org's own services are stored in its mount
// with the same fields.
package catalog

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/plugin/provider"
)

// Credential types.
const (
	TypeOAuth2   = "oauth2"
	TypeAPIKey   = "api_key"
	TypePassword = "password"
	TypeFile     = "file"
)

// Types are the credential types, in the order people are shown them.
var Types = []string{TypeOAuth2, TypeAPIKey, TypePassword, TypeFile}

// Service is one entry of the catalog: what a service accepts and how the
// engine talks to it. Built-in services come from catalog.json; custom ones
// are stored per mount. Nothing in it is secret.
type Service struct {
	Name        string `json:"name"`
	DisplayName string `json:"display_name"`
	// Description says what the service is, for people and for agents'
	// tool descriptions.
	Description string `json:"description,omitempty"`
	// DocsURL is the service's API documentation.
	DocsURL string `json:"docs_url,omitempty"`
	// Types are the credential types the service takes.
	Types []string `json:"types"`
	// BaseURLs are the only origins (and path prefixes) the broker may call;
	// a host may start with "*." to allow its subdomains.
	BaseURLs []string `json:"base_urls,omitempty"`
	// Injection says, per credential type, how the broker injects it.
	Injection map[string]egress.Injection `json:"injection,omitempty"`
	OAuth     *provider.Spec              `json:"oauth,omitempty"`
	// MCPURL is the service's remote MCP server (Streamable HTTP). Its
	// authorization server is found from it (RFC 9728), which fills OAuth.
	MCPURL string `json:"mcp_url,omitempty"`
	// MCPServer is a preset's remote MCP server, which is not the preset's
	// API: its authorization server is its own (found by discovery, which
	// needs the network), so an org adds it as a service of its own
	// (services/<name> mcp_from=<preset>). Presets only.
	MCPServer string      `json:"mcp_server,omitempty"`
	Verify    *VerifyCall `json:"verify,omitempty"`
	// RequiresHost marks services whose password credentials need a host
	// and port (SMTP).
	RequiresHost bool `json:"requires_host,omitempty"`
	// ServiceAccountJSON marks services whose files must be GCP
	// service-account keys.
	ServiceAccountJSON bool `json:"service_account_json,omitempty"`
	// Notes say what of the entry is assumed rather than documented by
	// the provider, and other things a person should know.
	Notes string `json:"notes,omitempty"`
	// GitHubApp marks services whose files are GitHub App private keys:
	// the broker injects installation tokens minted with them from the
	// first base URL's /app/installations/{id}/access_tokens.
	GitHubApp bool `json:"github_app,omitempty"`
	// Pricing is what the service's models cost, by model name prefix
	// (the longest that matches wins), for spend limits metered from the
	// usage its answers report. The operator may override it.
	Pricing map[string]Price `json:"pricing,omitempty"`
	// Builtin is set for catalog presets, which cannot be changed.
	Builtin bool `json:"builtin,omitempty"`
}

// Price is a model's price in US dollars per million tokens.
type Price struct {
	InputPerMTok  float64 `json:"input_per_mtok"`
	OutputPerMTok float64 `json:"output_per_mtok"`
}

// PriceOf is the price of model in pricing: the longest prefix that
// matches, or false.
func PriceOf(pricing map[string]Price, model string) (Price, bool) {
	best, found := "", false
	for prefix := range pricing {
		if strings.HasPrefix(model, prefix) && (!found || len(prefix) > len(best)) {
			best, found = prefix, true
		}
	}
	return pricing[best], found
}

// ValidatePricing checks a price table.
func ValidatePricing(pricing map[string]Price) error {
	if len(pricing) > 128 {
		return errors.New("pricing: at most 128 models")
	}
	for model, p := range pricing {
		if model == "" || len(model) > 128 || HasControl(model) {
			return fmt.Errorf("pricing: %q is not a model name (prefix)", model)
		}
		for _, v := range []float64{p.InputPerMTok, p.OutputPerMTok} {
			if v < 0 || v > 10000 || math.IsNaN(v) {
				return fmt.Errorf("pricing of %s: prices per million tokens are 0 to 10000 US dollars", model)
			}
		}
	}
	return nil
}

// VerifyCall is a cheap authenticated request that proves a credential works.
type VerifyCall struct {
	Method       string `json:"method"`
	URL          string `json:"url"`
	Body         string `json:"body,omitempty"`
	ExpectStatus int    `json:"expect_status"`
}

//go:embed catalog.json
var catalogJSON []byte

// MaxDescLen bounds a service's description.
const MaxDescLen = 500

// Builtin are the catalog's presets, parsed and checked once. Callers must
// not change them.
var Builtin = mustLoad(catalogJSON)

func mustLoad(raw []byte) map[string]*Service {
	var m map[string]*Service
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		panic(fmt.Sprintf("catalog.json: %v", err))
	}
	for name, svc := range m {
		svc.Name = name
		svc.Builtin = true
		if err := svc.Validate(); err != nil {
			panic(fmt.Sprintf("catalog.json: service %s: %v", name, err))
		}
	}
	return m
}

// Takes says whether the service accepts credentials of type t.
func (s *Service) Takes(t string) bool { return slices.Contains(s.Types, t) }

// Validate checks a service definition; the message names the bad field.
func (s *Service) Validate() error {
	if !contract.ValidServiceName(s.Name) {
		return errors.New(contract.ServiceNameRule)
	}
	if err := ValidatePricing(s.Pricing); err != nil {
		return err
	}
	if len(s.Notes) > 2*MaxDescLen || HasControl(s.Notes) {
		return fmt.Errorf("notes must be at most %d characters without control characters", 2*MaxDescLen)
	}
	if len(s.Description) > MaxDescLen || HasControl(s.Description) {
		return fmt.Errorf("description must be at most %d characters without control characters", MaxDescLen)
	}
	if s.DocsURL != "" {
		if u, err := url.Parse(s.DocsURL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
			return fmt.Errorf("docs_url must be an https URL")
		}
	}
	if len(s.Types) == 0 {
		return fmt.Errorf("types must name at least one of %s", strings.Join(Types, ", "))
	}
	for _, t := range s.Types {
		if !slices.Contains(Types, t) {
			return fmt.Errorf("types: unknown credential type %q (want %s)", t, strings.Join(Types, ", "))
		}
	}
	for _, raw := range s.BaseURLs {
		if err := validateBaseURL(raw); err != nil {
			return err
		}
	}
	for t, inj := range s.Injection {
		if !s.Takes(t) {
			return fmt.Errorf("injection for %q, a type the service does not take", t)
		}
		if err := validateInjection(inj, t); err != nil {
			return fmt.Errorf("injection for %s: %w", t, err)
		}
	}
	if s.MCPURL != "" {
		if err := validateMCPURL(s); err != nil {
			return err
		}
	}
	if s.MCPServer != "" {
		if u, err := url.Parse(s.MCPServer); !s.Builtin || err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" {
			return errors.New("mcp_server is a preset's remote MCP server, an https URL")
		}
	}
	if s.Takes(TypeOAuth2) {
		if s.OAuth == nil || s.OAuth.AuthURL == "" || s.OAuth.TokenURL == "" {
			return fmt.Errorf("a service taking oauth2 needs oauth.auth_url and oauth.token_url")
		}
	}
	if s.OAuth != nil {
		if err := s.OAuth.Validate(); err != nil {
			return fmt.Errorf("oauth: %w", err)
		}
	}
	if v := s.Verify; v != nil {
		if !slices.Contains([]string{http.MethodGet, http.MethodPost, http.MethodHead}, v.Method) {
			return fmt.Errorf("verify.method must be GET, POST or HEAD")
		}
		if err := validateAbsURL("verify.url", v.URL); err != nil {
			return err
		}
		if v.ExpectStatus < 100 || v.ExpectStatus > 599 {
			return fmt.Errorf("verify.expect_status must be an HTTP status")
		}
	}
	return nil
}

func validateInjection(inj egress.Injection, credType string) error {
	switch inj.Style {
	case egress.StyleHeader:
		if inj.Header == "" || !strings.Contains(inj.Format, "{secret}") {
			return fmt.Errorf("style header needs header and a format containing {secret}")
		}
		if strings.ContainsAny(inj.Header, " :\r\n") {
			return fmt.Errorf("header %q is not a valid header name", inj.Header)
		}
	case egress.StyleBasic:
		if credType != TypeAPIKey && credType != TypePassword {
			return fmt.Errorf("style basic suits api_key and password credentials only")
		}
		if inj.User != "" && (credType != TypeAPIKey || len(inj.User) > 128 || strings.ContainsAny(inj.User, ":\r\n")) {
			return fmt.Errorf("user (basic auth's fixed user name, up to 128 characters without ':') suits api_key credentials only")
		}
	case egress.StyleQuery:
		if inj.Query == "" {
			return fmt.Errorf("style query needs query, the parameter name")
		}
	case egress.StyleBody:
		if inj.Field == "" || len(inj.Field) > 128 {
			return fmt.Errorf("style body needs field, the JSON or form field's name (up to 128 characters)")
		}
		if credType == TypePassword {
			return fmt.Errorf("style body suits credentials of one secret; a password credential goes as basic auth or a header")
		}
	default:
		return fmt.Errorf("style must be header, basic, query or body, not %q", inj.Style)
	}
	for k := range inj.Headers {
		if strings.ContainsAny(k, " :\r\n") {
			return fmt.Errorf("headers: %q is not a valid header name", k)
		}
	}
	return nil
}

func validateAbsURL(field, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%s must be an absolute http or https URL", field)
	}
	return nil
}

func validateBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("base_urls: %q is not an absolute http or https URL", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("base_urls: %q must have no query, fragment or user info", raw)
	}
	if strings.Contains(strings.TrimPrefix(u.Hostname(), "*."), "*") {
		return fmt.Errorf("base_urls: %q may use a wildcard only as its first label (*.example.com)", raw)
	}
	return nil
}

// validateMCPURL checks a service's remote MCP server: an oauth2 service
// whose base URLs hold it, since the broker calls it with the grant.
func validateMCPURL(s *Service) error {
	u, err := url.Parse(s.MCPURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("mcp_url must be an absolute http or https URL without query, fragment or user info")
	}
	if !s.Takes(TypeOAuth2) {
		return fmt.Errorf("mcp_url needs a service taking oauth2: a remote MCP server's tokens are OAuth grants")
	}
	for _, raw := range s.BaseURLs {
		b, err := url.Parse(raw)
		if err != nil || b.Scheme != u.Scheme {
			continue
		}
		host := b.Hostname()
		hostOK := host == u.Hostname() || (strings.HasPrefix(host, "*.") && strings.HasSuffix(u.Hostname(), host[1:]))
		if hostOK && b.Port() == u.Port() && strings.HasPrefix(u.Path, strings.TrimSuffix(b.Path, "/")) {
			return nil
		}
	}
	return fmt.Errorf("mcp_url %s is under none of base_urls: the broker calls it with the grant, and only there", s.MCPURL)
}

// HasControl says whether s holds a control character, which no name,
// description or setting may.
func HasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}
