package portal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ory/fosite"

	"github.com/clankteam/credentials/internal/egress"
)

// MCP clients are never stored. A registered client's ID is its
// registration sealed with the session keys (every instance opens it); a
// client whose ID is an https URL is described by the metadata document
// there (a client ID metadata document), fetched through the egress guard
// and kept for a while.

const (
	sealedClientPrefix = "mcpc_"
	// clientDocMax bounds a client metadata document.
	clientDocMax = 64 << 10
	// clientDocReuse is how long a fetched document is used.
	clientDocReuse  = 5 * time.Minute
	maxRedirectURIs = 10
)

// mcpClient is what the server knows of a client.
type mcpClient struct {
	ID           string   `json:"-"`
	Name         string   `json:"client_name"`
	RedirectURIs []string `json:"redirect_uris"`
	IssuedAt     int64    `json:"iat,omitempty"`
}

// fosite is the client as fosite checks requests against it: public
// (PKCE, no secret), code and refresh grants only.
func (c *mcpClient) fosite() fosite.Client {
	return &fosite.DefaultOpenIDConnectClient{
		DefaultClient: &fosite.DefaultClient{
			ID: c.ID, RedirectURIs: c.RedirectURIs, Public: true,
			GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
			Scopes: []string{mcpScope, offlineAccess},
		},
		TokenEndpointAuthMethod: "none",
	}
}

type mcpClients struct {
	s      *Server
	client *http.Client

	mu   sync.Mutex
	docs map[string]clientDoc
}

type clientDoc struct {
	c     *mcpClient
	until time.Time
}

func newMCPClients(s *Server) *mcpClients {
	guard, err := egress.ParseGuard(s.cfg.PrivateTargets)
	if err != nil {
		guard = &egress.Guard{}
	}
	return &mcpClients{s: s, client: guard.Client(egress.ClientOptions{Timeout: 10 * time.Second, RootCAs: s.cfg.OutboundRoots}), docs: map[string]clientDoc{}}
}

// lookup returns the client with id.
func (m *mcpClients) lookup(ctx context.Context, id string) (*mcpClient, error) {
	switch {
	case strings.HasPrefix(id, sealedClientPrefix):
		var c mcpClient
		if err := m.s.sessions.open("mcp client", strings.TrimPrefix(id, sealedClientPrefix), &c); err != nil {
			return nil, errors.New("the client ID is not one this server registered")
		}
		c.ID = id
		return &c, nil
	case strings.HasPrefix(id, "https://"):
		return m.document(ctx, id)
	}
	return nil, errors.New("unknown client: register (RFC 7591) or use a client ID metadata document's https URL")
}

// document fetches and checks the client metadata document at id.
func (m *mcpClients) document(ctx context.Context, id string) (*mcpClient, error) {
	m.mu.Lock()
	d, ok := m.docs[id]
	m.mu.Unlock()
	if ok && time.Now().Before(d.until) {
		return d.c, nil
	}
	u, err := url.Parse(id)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Path == "" || u.Path == "/" || u.Fragment != "" || u.User != nil {
		return nil, errors.New("a client ID metadata document's URL must be https with a path")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := m.client.Do(req)
	if err != nil {
		if errors.Is(err, egress.ErrPrivateTarget) {
			return nil, errors.New("the client metadata document is on a private address the operator has not allowed")
		}
		return nil, fmt.Errorf("fetching the client metadata document failed")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the client metadata document answered %d", resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, clientDocMax+1))
	if err != nil || len(raw) > clientDocMax {
		return nil, errors.New("the client metadata document could not be read (at most 64 KiB)")
	}
	var doc struct {
		ClientID string `json:"client_id"`
		mcpClient
		AuthMethod string `json:"token_endpoint_auth_method"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, errors.New("the client metadata document is not JSON")
	}
	if doc.ClientID != id {
		return nil, errors.New("the client metadata document's client_id is not its URL")
	}
	if doc.AuthMethod != "" && doc.AuthMethod != "none" {
		return nil, errors.New("only public clients (token_endpoint_auth_method none) are supported")
	}
	c := &mcpClient{ID: id, Name: doc.Name, RedirectURIs: doc.RedirectURIs}
	if err := checkClient(c); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if len(m.docs) > 1000 {
		clear(m.docs)
	}
	m.docs[id] = clientDoc{c: c, until: time.Now().Add(clientDocReuse)}
	m.mu.Unlock()
	return c, nil
}

// checkClient applies the redirect URI rules: loopback http on any port
// (RFC 8252), or https.
func checkClient(c *mcpClient) error {
	if len(c.Name) > 200 || strings.ContainsFunc(c.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return errors.New("client_name must be at most 200 characters without control characters")
	}
	if len(c.RedirectURIs) == 0 || len(c.RedirectURIs) > maxRedirectURIs {
		return fmt.Errorf("redirect_uris must list 1-%d URIs", maxRedirectURIs)
	}
	for _, raw := range c.RedirectURIs {
		u, err := url.Parse(raw)
		if err != nil || u.Fragment != "" || u.User != nil || u.Host == "" {
			return fmt.Errorf("redirect URI %q is not an absolute URI without a fragment", raw)
		}
		switch {
		case u.Scheme == "https":
		case u.Scheme == "http" && isLoopback(u.Hostname()):
		default:
			return fmt.Errorf("redirect URI %q must be https, or http on a loopback address (127.0.0.1, [::1], localhost)", raw)
		}
	}
	if c.Name == "" {
		c.Name = clientHost(c.RedirectURIs[0])
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// clientHost is the host a redirect URI sends the code to, as the person
// is shown it.
func clientHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Host
}

// GetClient is fosite's lookup.
func (m *mcpClients) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	c, err := m.lookup(ctx, id)
	if err != nil {
		return nil, fosite.ErrNotFound.WithWrap(err).WithHint(err.Error())
	}
	return c.fosite(), nil
}

// The clients authenticate with nothing but PKCE: no client assertions.
func (m *mcpClients) ClientAssertionJWTValid(context.Context, string) error { return nil }
func (m *mcpClients) SetClientAssertionJWT(context.Context, string, time.Time) error {
	return nil
}

// handleRegister is RFC 7591 registration, for public clients.
func (a *mcpAuth) handleRegister(w http.ResponseWriter, r *http.Request) {
	allowAnyOrigin(w)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	refuse := func(msg string) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata", "error_description": msg})
	}
	var meta struct {
		RedirectURIs            []string `json:"redirect_uris"`
		ClientName              string   `json:"client_name"`
		GrantTypes              []string `json:"grant_types"`
		ResponseTypes           []string `json:"response_types"`
		TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, clientDocMax)).Decode(&meta); err != nil {
		refuse("the registration must be a JSON object (RFC 7591)")
		return
	}
	for _, g := range meta.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			refuse("grant_types may be authorization_code and refresh_token only")
			return
		}
	}
	if len(meta.ResponseTypes) > 0 && !slices.Equal(meta.ResponseTypes, []string{"code"}) {
		refuse("response_types may be code only")
		return
	}
	c := &mcpClient{Name: strings.TrimSpace(meta.ClientName), RedirectURIs: meta.RedirectURIs, IssuedAt: time.Now().Unix()}
	if err := checkClient(c); err != nil {
		refuse(err.Error())
		return
	}
	sealed, err := a.s.sessions.seal("mcp client", c)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error"})
		return
	}
	a.s.logger.Info("mcp client registered", "client_name", c.Name)
	// A public client: whatever auth method was asked for, it is none
	// (RFC 7591 3.2.1 lets the server say what it registered).
	writeJSON(w, http.StatusCreated, map[string]any{
		"client_id": sealedClientPrefix + sealed, "client_id_issued_at": c.IssuedAt,
		"client_name": c.Name, "redirect_uris": c.RedirectURIs,
		"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"},
		"token_endpoint_auth_method": "none",
	})
}
