// Package portal is the web service people use to manage their org's
// credentials and through which agents reach services (the broker). It holds
// no privileged Vault token: every request runs with the caller's own token,
// so Vault's ACL decides what each person and agent may do.
//
// Sessions are stateless: the person's Vault token is sealed into a cookie
// with a key from configuration, so any number of instances sharing that key
// can serve the same people behind a load balancer.
package portal

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/portal/provision"

	"github.com/gorilla/mux"
	"github.com/hashicorp/vault/api"
	"golang.org/x/time/rate"
)

// Config is what a portal instance needs; nothing in it is secret except
// the session key.
type Config struct {
	// Addr is the listen address, e.g. 127.0.0.1:8080.
	Addr string
	// VaultAddr is the Vault server every request is sent to.
	VaultAddr string
	// PublicURL is where people reach the portal (scheme://host[:port]),
	// used for the OAuth callback registered with providers and to decide
	// on Secure cookies. Default: http:// and the listen address.
	PublicURL string
	// SessionKey seals session cookies: 32 bytes, the same on every
	// instance behind one load balancer. Empty (and no SessionKeys): a
	// random key, so sessions end with the process.
	SessionKey []byte
	// SessionKeys, when set, is a ring of keys instead: the first seals,
	// all open, so a new key rolls out without signing anyone out
	// (PORTAL_SESSION_KEYS).
	SessionKeys []SessionKey
	// TrustedOrigins may post forms besides the portal's own origin, e.g.
	// the public origin of a proxy that rewrites Host.
	TrustedOrigins []string
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client address (for the sign-in limits); nobody else's is read.
	TrustedProxies []netip.Prefix
	// SignInsPerMinute bounds sign-in attempts per client address and per
	// user name (default 10).
	SignInsPerMinute int
	// EdgeKey opens the injections the engine seals for the broker edge
	// (PORTAL_EDGE_KEY); the engine must be registered with its public
	// half. Without it the broker refuses every call and says why.
	EdgeKey *egress.EdgePrivateKey
	// PrivateTargets are the loopback or private networks the portal's
	// own outbound calls (MCP clients' metadata documents) may reach, in
	// the engine's syntax (CREDENTIALS_PRIVATE_TARGETS); empty: none.
	PrivateTargets string
	// OutboundRoots are the CAs those calls, and the edge's calls to
	// services, trust; nil: the system's.
	OutboundRoots *x509.CertPool
	// ProxyAddr, when set, is where the forward proxy listens
	// (HTTPS_PROXY for agents' programs), e.g. 127.0.0.1:8081.
	ProxyAddr string
	// ProxyCADir holds the orgs' proxy CAs, <org>.pem and <org>-key.pem,
	// made by portal proxy-ca (PORTAL_PROXY_CA_DIR).
	ProxyCADir string
	// Logger receives request logs; never a secret.
	Logger *slog.Logger
}

// Server is one portal instance.
type Server struct {
	cfg     Config
	logger  *slog.Logger
	router  *mux.Router
	handler http.Handler
	http    *http.Server
	ln      net.Listener
	// proxy is the forward proxy, with its own server and listener.
	proxy     *forwardProxy
	proxyHTTP *http.Server
	proxyLn   net.Listener
	vaultBase *api.Client
	sessions  *sealer
	broker    *brokerHandler
	mcp       *mcpServer
	mcpAuth   *mcpAuth
	pages     *pages
	signIns   *rateLimiter
	// signInFailures counts wrong passwords per account and address.
	signInFailures *rateLimiter
	metrics        *metrics
	publicURL      *url.URL
	// now is the clock; tests move it.
	now func() time.Time
}

// NewServer builds a portal with its routes registered.
func NewServer(cfg Config) (*Server, error) {
	if cfg.VaultAddr == "" {
		return nil, errors.New("portal: VaultAddr is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ring := cfg.SessionKeys
	if len(ring) == 0 && len(cfg.SessionKey) > 0 {
		ring = []SessionKey{{Key: cfg.SessionKey}}
	}
	if len(ring) == 0 {
		key := make([]byte, sessionKeyLen)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("portal: session key: %w", err)
		}
		ring = []SessionKey{{Key: key}}
		cfg.Logger.Warn("no session key configured: using a random one, so sessions end when this process does and other instances cannot read them")
	}
	sealer, err := newKeyRing(ring)
	if err != nil {
		return nil, err
	}
	base, err := newVaultBase(cfg.VaultAddr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:    cfg,
		logger: cfg.Logger,
		// No cleaning: mux would answer an unclean path (/broker/x/../y)
		// with a redirect to the cleaned one, which the broker must refuse
		// instead of following.
		router:    mux.NewRouter().SkipClean(true),
		vaultBase: base,
		sessions:  sealer,
		signIns:   newRateLimiter(signInRate, signInBurst),
		signInFailures: newRateLimiter(rate.Limit(float64(signInFailuresPerAddress)/provision.UserLockoutDuration.Seconds()),
			signInFailuresPerAddress),
		metrics: newMetrics(),
		now:     time.Now,
	}
	if n := cfg.SignInsPerMinute; n > 0 {
		s.signIns = newRateLimiter(rate.Limit(float64(n)/60), n)
	}
	if s.pages, err = parsePages(func() time.Time { return s.now() }); err != nil {
		return nil, err
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(strings.TrimRight(cfg.PublicURL, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("portal: PublicURL %q must be an absolute http(s) URL", cfg.PublicURL)
		}
		s.publicURL = u
	}
	if s.handler, err = s.routes(); err != nil {
		return nil, err
	}
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
	}
	if cfg.ProxyAddr != "" {
		cas, err := newProxyCAs(cfg.ProxyCADir)
		if err != nil {
			return nil, err
		}
		guard, err := egress.ParseGuard(cfg.PrivateTargets)
		if err != nil {
			return nil, err
		}
		s.proxy = newForwardProxy(s.broker, s.mcp, cas, guard, s.logger)
		// No read timeout: a tunnel lives as long as its client keeps
		// it; the calls inside are bounded by broker_timeout.
		s.proxyHTTP = &http.Server{Handler: s.proxy, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	}
	return s, nil
}

// Listen opens the listening socket, so the address is known (and ports
// chosen with :0 are fixed) before Serve runs.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	s.ln = ln
	if s.proxyHTTP != nil {
		if s.proxyLn, err = net.Listen("tcp", s.cfg.ProxyAddr); err != nil {
			ln.Close()
			return err
		}
	}
	if s.publicURL == nil {
		s.publicURL = &url.URL{Scheme: "http", Host: ln.Addr().String()}
	}
	return nil
}

// URL is the portal's base address once Listen has returned.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// ProxyURL is the forward proxy's address once Listen has returned, ""
// without one.
func (s *Server) ProxyURL() string {
	if s.proxyLn == nil {
		return ""
	}
	return "http://" + s.proxyLn.Addr().String()
}

// PublicURL is where people reach the portal: Config.PublicURL, or the
// listen address once Listen has returned.
func (s *Server) PublicURL() string {
	if s.publicURL == nil {
		return ""
	}
	return s.publicURL.String()
}

// CallbackURL is the OAuth redirect URI to register with providers.
func (s *Server) CallbackURL() string { return s.PublicURL() + "/oauth/callback" }

// clientMetadataPath is where the portal serves its client ID metadata
// document, the engine's OAuth client at authorization servers that take
// such documents (CIMD): config client_metadata_url names it.
const clientMetadataPath = "/oauth/client.json"

// ClientMetadataURL is the client ID of the portal's metadata document.
func (s *Server) ClientMetadataURL() string { return s.PublicURL() + clientMetadataPath }

// handleClientMetadata serves the document: a public client (PKCE, no
// secret) whose code comes back to the portal's callback.
func (s *Server) handleClientMetadata(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=3600")
	writeJSON(w, http.StatusOK, map[string]any{
		"client_id":                  s.ClientMetadataURL(),
		"client_name":                "Credentials broker",
		"client_uri":                 s.PublicURL(),
		"redirect_uris":              []string{s.CallbackURL()},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
	})
}

// Serve answers requests until Shutdown.
func (s *Server) Serve() error {
	if s.proxyLn != nil {
		go func() {
			if err := s.proxyHTTP.Serve(s.proxyLn); !errors.Is(err, http.ErrServerClosed) {
				s.logger.Error("the forward proxy stopped", "error", err)
			}
		}()
	}
	if err := s.http.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting requests, waits for those in flight, ends
// the sessions with remote MCP servers and sends the trail lines waiting.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if s.proxyHTTP != nil {
		// Tunnels are hijacked connections: the inner server ends them.
		err = errors.Join(err, s.proxyHTTP.Shutdown(ctx), s.proxy.shutdown(ctx))
	}
	s.mcp.remote.closeAll()
	// The calls just made are told to the engine for the agents' trails.
	s.broker.trail.flush()
	return err
}

// ServeHTTP lets tests drive the portal without a socket.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// secureCookies says whether cookies get the Secure attribute: whenever
// people reach the portal over TLS.
func (s *Server) secureCookies(r *http.Request) bool {
	return r.TLS != nil || (s.publicURL != nil && s.publicURL.Scheme == "https")
}
