package provider

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// A remote MCP server names its authorization server itself (the MCP
// authorization spec, 2025-11-25): its 401 or its RFC 9728 metadata names
// the authorization server, whose RFC 8414 or OpenID Connect metadata has
// the endpoints. The go-sdk's oauthex does the parsing and the checks the
// spec asks for (the metadata's resource is the server's URL, the issuer is
// the one asked for, no dangerous URL schemes); every request goes through
// the engine's egress-guarded client, which follows no redirect.

// MCPServer is what discovery found of a remote MCP server.
type MCPServer struct {
	// Resource is the server's resource identifier (RFC 8707), sent on
	// the authorize and every token request.
	Resource string
	// Scopes are the scopes the server's metadata lists, if any.
	Scopes []string
	// Auth is its authorization server.
	Auth Discovery
	// RegistrationURL is the RFC 7591 endpoint, "" when there is none.
	RegistrationURL string
	// CIMD: the authorization server takes client ID metadata documents.
	CIMD bool
}

// DiscoverMCP finds how to get a token for the MCP server at mcpURL.
func (h *HTTP) DiscoverMCP(ctx context.Context, mcpURL string) (*MCPServer, *Error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	u, err := url.Parse(mcpURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, &Error{Kind: Refused, Msg: "mcp_url is not an http(s) URL"}
	}
	var prm *oauthex.ProtectedResourceMetadata
	var last error
	locations, challengeScope := h.resourceMetadataURLs(ctx, u)
	for _, loc := range locations {
		prm, last = oauthex.GetProtectedResourceMetadata(ctx, loc.url, loc.resource, h.client)
		if last == nil && prm != nil {
			break
		}
		prm = nil
	}
	if prm == nil {
		msg := "the MCP server publishes no protected-resource metadata (RFC 9728)"
		if last != nil {
			msg += ": " + Clip(last.Error(), 300)
		}
		return nil, &Error{Kind: Refused, Msg: msg}
	}
	if len(prm.AuthorizationServers) == 0 {
		return nil, &Error{Kind: Refused, Msg: "the MCP server's metadata names no authorization server"}
	}
	issuer := prm.AuthorizationServers[0]
	asm, err := auth.GetAuthServerMetadata(ctx, issuer, h.client)
	if err != nil || asm == nil {
		msg := "the authorization server " + Clip(issuer, 200) + " publishes no RFC 8414 or OpenID Connect metadata"
		if err != nil {
			msg = "the authorization server's metadata: " + Clip(err.Error(), 300)
		}
		return nil, &Error{Kind: Refused, Msg: msg}
	}
	if !slices.Contains(asm.CodeChallengeMethodsSupported, "S256") {
		return nil, &Error{Kind: Refused, Msg: "the authorization server " + Clip(issuer, 200) + " does not offer PKCE with S256, which the MCP authorization spec requires"}
	}
	if asm.AuthorizationEndpoint == "" || asm.TokenEndpoint == "" {
		return nil, &Error{Kind: Refused, Msg: "the authorization server's metadata names no authorization or token endpoint"}
	}
	// The scopes of the server's 401 come first (the spec's scope
	// selection), then those its metadata lists.
	scopes := prm.ScopesSupported
	if challengeScope != "" {
		scopes = strings.Fields(challengeScope)
	}
	return &MCPServer{
		Resource: prm.Resource,
		Scopes:   scopes,
		Auth: Discovery{
			Issuer: asm.Issuer, AuthURL: asm.AuthorizationEndpoint, TokenURL: asm.TokenEndpoint,
			RevokeURL: asm.RevocationEndpoint, S256: true,
			AuthMethods:  asm.TokenEndpointAuthMethodsSupported,
			IssParameter: asm.AuthorizationResponseIssParameterSupported,
		},
		RegistrationURL: asm.RegistrationEndpoint,
		CIMD:            asm.ClientIDMetadataDocumentSupported,
	}, nil
}

// metadataLocation is where a server's RFC 9728 metadata may be, and the
// resource that metadata must name there.
type metadataLocation struct{ url, resource string }

// resourceMetadataURLs are where the server's RFC 9728 metadata may be, in
// the spec's order: the resource_metadata of its 401, then the well-known
// URI with the server's path, then at the root, whose metadata names the
// origin (RFC 9728 section 3.3). The 401 answers an initialize request, as
// a client's first message would be (Streamable HTTP takes messages by
// POST only); its scope, if any, is returned too.
func (h *HTTP) resourceMetadataURLs(ctx context.Context, u *url.URL) (out []metadataLocation, scope string) {
	const initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"credentials-engine","version":"1"}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(initialize))
	if err == nil {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if resp, err := h.client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				if cs, err := oauthex.ParseWWWAuthenticate(resp.Header.Values("WWW-Authenticate")); err == nil {
					for _, c := range cs {
						if c.Scheme != "bearer" {
							continue
						}
						if m := c.Params["resource_metadata"]; m != "" {
							out = append(out, metadataLocation{m, u.String()})
						}
						if scope == "" {
							scope = c.Params["scope"]
						}
					}
				}
			}
		}
	}
	origin := u.Scheme + "://" + u.Host
	if p := strings.TrimSuffix(u.EscapedPath(), "/"); p != "" {
		out = append(out, metadataLocation{origin + "/.well-known/oauth-protected-resource" + p, u.String()})
	}
	return append(out, metadataLocation{origin + "/.well-known/oauth-protected-resource", origin}), scope
}

// Registration is a client registered by RFC 7591.
type Registration struct {
	ClientID, ClientSecret string
	// AuthMethod is how the client authenticates at the token endpoint.
	AuthMethod string
}

// Register registers a client named name, whose code comes back to
// redirectURL, at the RFC 7591 endpoint regURL, authenticating at the token
// endpoint with authMethod (the service's token_auth_method; "" is
// client_secret_post). A server that registers it with another method is
// refused: the service's token requests would then fail.
func (h *HTTP) Register(ctx context.Context, regURL, name, redirectURL, authMethod string) (*Registration, *Error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	method := authMethod
	if method == "" {
		method = AuthSecretPost
	}
	resp, err := oauthex.RegisterClient(ctx, regURL, &oauthex.ClientRegistrationMetadata{
		ClientName: name, RedirectURIs: []string{redirectURL},
		GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
		TokenEndpointAuthMethod: method,
	}, h.client)
	if err != nil {
		// Only the server's RFC 7591 error is shown: oauthex's other errors
		// can quote the answer, which may hold the client secret.
		var re *oauthex.ClientRegistrationError
		if errors.As(err, &re) {
			return nil, &Error{Kind: Refused, Msg: "the registration endpoint refused: " + Clip(re.ErrorCode+": "+re.ErrorDescription, 300)}
		}
		return nil, &Error{Kind: Transient, Msg: "registering a client at " + Clip(regURL, 200) + " failed, or its answer was not a registration"}
	}
	if resp.ClientID == "" {
		return nil, &Error{Kind: Refused, Msg: "registering a client: the answer has no client_id"}
	}
	if m := resp.TokenEndpointAuthMethod; m != "" && m != method {
		return nil, &Error{Kind: Refused, Msg: "the registration endpoint registered the client for " + Clip(m, 40) + ", not " + method + " as asked"}
	}
	if method != AuthNone && resp.ClientSecret == "" {
		return nil, &Error{Kind: Refused, Msg: "the registration endpoint gave no client_secret for a " + method + " client"}
	}
	secret := resp.ClientSecret
	if method == AuthNone {
		// A public client was asked for: a secret given anyway is never
		// sent, so it is not kept.
		secret = ""
	}
	return &Registration{ClientID: resp.ClientID, ClientSecret: secret, AuthMethod: method}, nil
}
