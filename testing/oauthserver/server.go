// Package oauthserver is a real OAuth 2 authorization server for tests and
// the offline demo. The protocol work (authorization code + PKCE, refresh
// rotation with reuse detection, RFC 7009 revocation, introspection) is done
// by github.com/ory/fosite; this package adds the consent page, a
// Google-style JWT-bearer grant, provider-specific revocation endpoints and
// switchable quirks that imitate real providers on the wire.
//
// The server never logs tokens or client secrets; it keeps only hashes of
// client secrets and looks tokens up by fosite's HMAC signatures.
package oauthserver

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
)

// Grant type names, as sent in the grant_type form field.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantJWTBearer         = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	GrantClientCredentials = "client_credentials"
)

// Identity is the account a token belongs to, as /userinfo reports it.
type Identity struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Login string `json:"login"`
}

// Client is an OAuth client registration.
type Client struct {
	ID           string
	Secret       string // ignored for public clients
	RedirectURIs []string
	// Scopes the client may request; empty means any scope.
	Scopes []string
	// Public clients send no secret and must use PKCE.
	Public bool
	// AuthMethod, when set, is the only client authentication the token,
	// revocation and introspection endpoints accept from this client:
	// client_secret_basic, client_secret_post or none.
	AuthMethod string
}

// Options configures a Server. Zero values pick the defaults noted.
type Options struct {
	// Addr to listen on; default "127.0.0.1:0" (random port).
	Addr string
	// Clients registered at start; more via AddClient.
	Clients []Client
	// ServiceAccounts maps a service account's client_email (the assertion's
	// iss) to the public key its JWT-bearer assertions are signed with.
	ServiceAccounts map[string]*rsa.PublicKey

	AccessTokenLifespan  time.Duration // default 1h
	RefreshTokenLifespan time.Duration // default 720h; negative: never expires
	AuthCodeLifespan     time.Duration // default 10m

	// RequirePKCE rejects authorization requests without an S256 challenge
	// for every client (public clients always need one).
	RequirePKCE bool
	// AutoApprove skips the consent page: GET /authorize redirects with a
	// code at once. A request can also ask for it with auto=approve (or
	// auto=deny) in the authorization URL.
	AutoApprove bool
	// User is the account that approves on the consent page by default.
	User Identity
	// Quirks active from the start; change them later with SetQuirks.
	Quirks Quirks
	// IssInCallback adds RFC 9207's iss (the issuer, Issuer()) to the
	// authorization response.
	IssInCallback bool
	// CIMD takes client ID metadata documents: a client_id that is an
	// http(s) URL is the client described by the JSON document there,
	// fetched on each lookup (plain http too, for loopback test servers).
	CIMD bool
	// Logf, if set, receives one line per token-endpoint outcome (grant and
	// error code; never a token or secret).
	Logf func(format string, args ...any)
}

// Server is a running authorization server.
type Server struct {
	opts     Options
	store    *store
	strategy *oauth2.HMACSHAStrategy
	provider fosite.OAuth2Provider
	config   *fosite.Config
	http     *http.Server
	handler  http.Handler
	baseURL  string

	// flowMu serialises the token and revocation endpoints so that a
	// refresh and a concurrent reuse or revocation have one order, as in a
	// provider's transactional store.
	flowMu sync.Mutex

	mu          sync.Mutex // guards everything below
	quirks      Quirks
	failLeft    int
	autoApprove bool
	tokenCalls  int
	grantCalls  map[string]int
	revokeCalls int
	// refreshRefusals counts refresh_token grants refused with
	// invalid_grant: a spent (reused) or revoked refresh token.
	refreshRefusals int
	saKeys          map[string][]*rsa.PublicKey
	registrations   int
	resources       []string
	jwtGrants       []JWTBearerGrant
	closeOnce       sync.Once
	serveStopped    chan struct{}
}

// New starts a server listening on opts.Addr (default 127.0.0.1, random port).
func New(opts Options) (*Server, error) {
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("oauthserver: listen: %w", err)
	}
	s, err := newServer(opts, "http://"+ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, err
	}
	s.http = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	s.serveStopped = make(chan struct{})
	go func() {
		defer close(s.serveStopped)
		// Serve only returns ErrServerClosed after Close, or a listener error
		// that every later request will show anyway.
		_ = s.http.Serve(ln)
	}()
	return s, nil
}

// Start is New under the name httptest users expect.
func Start(opts Options) (*Server, error) { return New(opts) }

// Long on purpose: the server's whole fosite configuration in one place.
func newServer(opts Options, baseURL string) (*Server, error) {
	if opts.AccessTokenLifespan == 0 {
		opts.AccessTokenLifespan = time.Hour
	}
	if opts.RefreshTokenLifespan == 0 {
		opts.RefreshTokenLifespan = 720 * time.Hour
	}
	if opts.RefreshTokenLifespan < 0 {
		opts.RefreshTokenLifespan = -1 // fosite's "never expires"
	}
	if opts.AuthCodeLifespan == 0 {
		opts.AuthCodeLifespan = 10 * time.Minute
	}
	if opts.User == (Identity{}) {
		opts.User = Identity{ID: "1001", Email: "agent-owner@example.test", Login: "agent-owner"}
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}

	s := &Server{
		opts:        opts,
		store:       newStore(opts.CIMD),
		baseURL:     baseURL,
		quirks:      opts.Quirks,
		failLeft:    opts.Quirks.FailNextTokenCalls,
		autoApprove: opts.AutoApprove,
		grantCalls:  map[string]int{},
		saKeys:      map[string][]*rsa.PublicKey{},
	}
	for email, key := range opts.ServiceAccounts {
		s.saKeys[email] = append(s.saKeys[email], key)
	}

	// Every lazily defaulted field is set here: fosite's getters write the
	// default into the config on first use, which races between requests.
	s.config = &fosite.Config{
		AccessTokenLifespan:            opts.AccessTokenLifespan,
		RefreshTokenLifespan:           opts.RefreshTokenLifespan,
		AuthorizeCodeLifespan:          opts.AuthCodeLifespan,
		GlobalSecret:                   secret,
		TokenURL:                       baseURL + "/token",
		EnforcePKCE:                    opts.RequirePKCE,
		EnforcePKCEForPublicClients:    true,
		EnablePKCEPlainChallengeMethod: false,
		RefreshTokenScopes:             []string{}, // a refresh token with every code grant, no "offline" scope needed
		ScopeStrategy:                  scopeStrategy,
		AudienceMatchingStrategy:       fosite.DefaultAudienceMatchingStrategy,
		ClientSecretsHasher:            sha256Hasher{},
	}
	s.strategy = compose.NewOAuth2HMACStrategy(s.config)
	s.provider = compose.Compose(s.config, s.store, s.strategy,
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2PKCEFactory,
		compose.OAuth2TokenIntrospectionFactory,
		compose.OAuth2TokenRevocationFactory,
		s.jwtBearerFactory,
	)
	for _, c := range opts.Clients {
		if err := s.addClient(c); err != nil {
			return nil, err
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", s.handleAuthorize)
	mux.HandleFunc("POST /authorize", s.handleAuthorize)
	mux.HandleFunc("POST /token", s.handleToken)
	mux.HandleFunc("POST /register", s.handleRegister)
	mux.HandleFunc("POST /revoke", s.handleRevoke)
	mux.HandleFunc("POST /introspect", s.handleIntrospect)
	mux.HandleFunc("GET /userinfo", s.handleUserinfo)
	mux.HandleFunc("GET /.well-known/openid-configuration", s.handleDiscovery)
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.handleDiscovery)
	mux.HandleFunc("POST /userinfo", s.handleUserinfo)
	mux.HandleFunc("DELETE /applications/{client_id}/token", s.handleGitHubRevoke)
	mux.HandleFunc("POST /api/auth.revoke", s.handleSlackRevoke)
	mux.HandleFunc("GET /api/auth.revoke", s.handleSlackRevoke)
	s.handler = mux
	return s, nil
}

// scopeStrategy matches scopes exactly (provider scopes such as Google's
// URLs or GitHub's "user:email" are opaque), and "*" in a client's list
// allows any scope.
func scopeStrategy(haystack []string, needle string) bool {
	for _, h := range haystack {
		if h == "*" || h == needle {
			return true
		}
	}
	return false
}

// Close stops the server and waits for its listener loop to end.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if s.http == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.http.Shutdown(ctx); err != nil {
			s.http.Close()
		}
		<-s.serveStopped
	})
}

// URL is the base URL, e.g. http://127.0.0.1:41234 (no trailing slash).
func (s *Server) URL() string { return s.baseURL }

// AuthURL is the authorization endpoint.
func (s *Server) AuthURL() string { return s.baseURL + "/authorize" }

// Issuer is the server's issuer identifier: its base URL.
func (s *Server) Issuer() string { return s.baseURL }

// DiscoveryURL is the OpenID Connect discovery document.
func (s *Server) DiscoveryURL() string { return s.baseURL + "/.well-known/openid-configuration" }

// TokenURL is the token endpoint, also the audience JWT-bearer assertions must name.
func (s *Server) TokenURL() string { return s.baseURL + "/token" }

// RevokeURL is the RFC 7009 revocation endpoint.
func (s *Server) RevokeURL() string { return s.baseURL + "/revoke" }

// UserinfoURL is the account-identity endpoint.
func (s *Server) UserinfoURL() string { return s.baseURL + "/userinfo" }

// IntrospectURL is the RFC 7662 introspection endpoint.
func (s *Server) IntrospectURL() string { return s.baseURL + "/introspect" }

// Handler is the server's HTTP handler, for embedding in another server.
// Tokens it issues name the URL the server was created with as audience.
func (s *Server) Handler() http.Handler { return s.handler }

// AddClient registers a confidential client (or replaces one with that ID).
// Empty scopes allow any scope.
func (s *Server) AddClient(id, secret string, redirectURIs []string, scopes []string) error {
	return s.addClient(Client{ID: id, Secret: secret, RedirectURIs: redirectURIs, Scopes: scopes})
}

// Register registers c (or replaces a client with its ID).
func (s *Server) Register(c Client) error { return s.addClient(c) }

// AddPublicClient registers a client without a secret; it must use PKCE.
func (s *Server) AddPublicClient(id string, redirectURIs []string, scopes []string) error {
	return s.addClient(Client{ID: id, RedirectURIs: redirectURIs, Scopes: scopes, Public: true})
}

func (s *Server) addClient(c Client) error {
	if c.ID == "" {
		return errors.New("oauthserver: client ID is empty")
	}
	if !c.Public && c.Secret == "" {
		return fmt.Errorf("oauthserver: confidential client %q needs a secret", c.ID)
	}
	scopes := c.Scopes
	if len(scopes) == 0 {
		scopes = []string{"*"}
	}
	dc := &fosite.DefaultClient{
		ID:            c.ID,
		RedirectURIs:  append([]string(nil), c.RedirectURIs...),
		GrantTypes:    []string{GrantAuthorizationCode, GrantRefreshToken, GrantJWTBearer, GrantClientCredentials},
		ResponseTypes: []string{"code"},
		Scopes:        append([]string(nil), scopes...),
		Public:        c.Public,
	}
	if !c.Public {
		h, _ := sha256Hasher{}.Hash(context.Background(), []byte(c.Secret))
		dc.Secret = h
	}
	if c.AuthMethod != "" {
		// fosite enforces the method of an OpenID Connect client.
		s.store.setClient(&fosite.DefaultOpenIDConnectClient{DefaultClient: dc, TokenEndpointAuthMethod: c.AuthMethod})
		return nil
	}
	s.store.setClient(dc)
	return nil
}

// AddServiceAccount registers a public key for JWT-bearer assertions whose
// iss is email. Several keys per account are allowed (key rotation).
func (s *Server) AddServiceAccount(email string, key *rsa.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saKeys[email] = append(s.saKeys[email], key)
}

// SetAutoApprove switches the consent page off (true) or on at runtime.
func (s *Server) SetAutoApprove(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.autoApprove = on
}

// TokenCalls is the number of requests the token endpoint received,
// including ones failed by quirks.
func (s *Server) TokenCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenCalls
}

// TokenCallsFor is the number of token-endpoint requests with this grant_type.
func (s *Server) TokenCallsFor(grantType string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grantCalls[grantType]
}

// RefreshRefusals is the number of refresh_token grants refused with
// invalid_grant: each is a refresh token used after it was spent or
// revoked, which with rotation means a grant lost.
func (s *Server) RefreshRefusals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshRefusals
}

// RevokeCalls is the number of requests to any revocation endpoint
// (RFC 7009, GitHub-style, Slack-style).
func (s *Server) RevokeCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revokeCalls
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// identityFor maps a login typed on the consent page to an account, so a
// demo can connect several distinct accounts.
func (s *Server) identityFor(login string) Identity {
	login = strings.TrimSpace(login)
	if login == "" || login == s.opts.User.Login {
		return s.opts.User
	}
	var n uint32
	for _, c := range []byte(login) {
		n = n*31 + uint32(c)
	}
	return Identity{ID: fmt.Sprint(2000 + n%1000000), Email: login + "@example.test", Login: login}
}

func newSession(id Identity) *fosite.DefaultSession {
	return &fosite.DefaultSession{
		Subject:  id.ID,
		Username: id.Login,
		Extra:    map[string]interface{}{"id": id.ID, "email": id.Email, "login": id.Login},
	}
}
