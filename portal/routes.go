package portal

import "net/http"

// routes lists every route the portal serves, so its whole surface is
// visible in one place.
func (s *Server) routes() {
	s.router.HandleFunc("/healthz", s.handleHealthz).Methods(http.MethodGet)
	s.router.HandleFunc("/", s.handleHome).Methods(http.MethodGet)
	s.router.PathPrefix("/broker/").Handler(newBrokerHandler(s.cfg.VaultAddr, s.logger))
}
