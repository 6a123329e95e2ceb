package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
)

// Discovery is what a provider's metadata (OpenID Connect discovery or
// RFC 8414) says of it.
type Discovery struct {
	Issuer      string
	AuthURL     string
	TokenURL    string
	RevokeURL   string
	UserinfoURL string
	// S256: the provider supports PKCE with S256.
	S256 bool
	// AuthMethods are its token_endpoint_auth_methods_supported.
	AuthMethods []string
	// IssParameter: it sends RFC 9207's iss on authorization responses.
	IssParameter bool
}

// Discover reads the metadata document at url.
func (h *HTTP) Discover(ctx context.Context, url string) (*Discovery, *Error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, &Error{Kind: Refused, Msg: "discovery_url is not a URL"}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, classify(err, "discovery")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError("discovery", resp.StatusCode, "", "", nil)
	}
	var m struct {
		Issuer                string   `json:"issuer"`
		AuthorizationEP       string   `json:"authorization_endpoint"`
		TokenEP               string   `json:"token_endpoint"`
		RevocationEP          string   `json:"revocation_endpoint"`
		UserinfoEP            string   `json:"userinfo_endpoint"`
		ChallengeMethods      []string `json:"code_challenge_methods_supported"`
		AuthMethods           []string `json:"token_endpoint_auth_methods_supported"`
		IssParameterSupported bool     `json:"authorization_response_iss_parameter_supported"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&m); err != nil {
		return nil, &Error{Kind: Refused, Msg: "discovery: the document is not JSON metadata"}
	}
	if m.Issuer == "" || m.TokenEP == "" {
		return nil, &Error{Kind: Refused, Msg: "discovery: the document names no issuer or token_endpoint"}
	}
	// OpenID Connect Discovery 4.3 and RFC 8414 3.3: the document's issuer
	// is the one its address was built from, or another provider's
	// document could stand in.
	if !strings.HasPrefix(url, strings.TrimSuffix(m.Issuer, "/")+"/.well-known/") {
		return nil, &Error{Kind: Refused, Msg: fmt.Sprintf("discovery: the document's issuer %q is not the one %s belongs to", Clip(m.Issuer, 200), url)}
	}
	return &Discovery{
		Issuer: m.Issuer, AuthURL: m.AuthorizationEP, TokenURL: m.TokenEP,
		RevokeURL: m.RevocationEP, UserinfoURL: m.UserinfoEP,
		S256:         slices.Contains(m.ChallengeMethods, "S256"),
		AuthMethods:  m.AuthMethods,
		IssParameter: m.IssParameterSupported,
	}, nil
}

// Fill sets spec's fields left empty from d: endpoints, issuer, PKCE when
// S256 is offered, RFC 7009 revocation when there is an endpoint, and the
// client authentication: client_secret_basic when the provider does not
// take client_secret_post (RFC 8414's default is basic).
func (d *Discovery) Fill(spec *Spec) {
	set := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	set(&spec.AuthURL, d.AuthURL)
	set(&spec.TokenURL, d.TokenURL)
	set(&spec.UserinfoURL, d.UserinfoURL)
	set(&spec.Issuer, d.Issuer)
	if spec.RevokeURL == "" && d.RevokeURL != "" {
		spec.RevokeURL = d.RevokeURL
		set(&spec.RevokeStyle, RevokeRFC7009)
	}
	if d.S256 {
		spec.PKCE = true
	}
	if d.IssParameter {
		spec.IssRequired = true
	}
	if spec.TokenAuthMethod == "" {
		methods := d.AuthMethods
		if len(methods) == 0 {
			methods = []string{AuthSecretBasic}
		}
		switch {
		case slices.Contains(methods, AuthSecretPost):
		case slices.Contains(methods, AuthSecretBasic):
			spec.TokenAuthMethod = AuthSecretBasic
		case slices.Contains(methods, AuthNone):
			// A server taking public clients only: no secret to send.
			spec.TokenAuthMethod = AuthNone
		}
	}
}
