// Package portal is the web service people use to manage their org's
// credentials and through which agents reach services (the broker). It holds
// no privileged Vault token: every request runs with the caller's own token,
// so Vault's ACL decides what each person and agent may do.
package portal

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/mux"
)

// Config is what a portal instance needs; nothing in it is secret except
// the cookie key.
type Config struct {
	// Addr is the listen address, e.g. 127.0.0.1:8080.
	Addr string
	// VaultAddr is the Vault server every request is sent to.
	VaultAddr string
	// Logger receives request logs; never a secret.
	Logger *slog.Logger
}

// Server is one portal instance.
type Server struct {
	cfg    Config
	logger *slog.Logger
	router *mux.Router
	http   *http.Server
	ln     net.Listener
}

// NewServer builds a portal with its routes registered.
func NewServer(cfg Config) (*Server, error) {
	if cfg.VaultAddr == "" {
		return nil, errors.New("portal: VaultAddr is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, logger: cfg.Logger, router: mux.NewRouter()}
	s.routes()
	s.http = &http.Server{
		Handler:           s.router,
		ReadHeaderTimeout: 10 * time.Second,
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
	return nil
}

// URL is the portal's base address once Listen has returned.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Serve answers requests until Shutdown.
func (s *Server) Serve() error {
	if err := s.http.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting requests and waits for those in flight.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// ServeHTTP lets tests drive the portal without a socket.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }
