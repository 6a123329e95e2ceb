package oauthserver

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
)

// RFC 7591 dynamic client registration, as MCP authorization servers offer
// it: a client posts its metadata and gets a client ID (and a secret, unless
// it asks to be public). Registered clients are kept like AddClient's.

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	var m struct {
		ClientName   string   `json:"client_name"`
		RedirectURIs []string `json:"redirect_uris"`
		AuthMethod   string   `json:"token_endpoint_auth_method"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&m); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata", "error_description": "the body is not JSON client metadata"})
		return
	}
	if len(m.RedirectURIs) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_redirect_uri", "error_description": "redirect_uris is required"})
		return
	}
	for _, u := range m.RedirectURIs {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_redirect_uri", "error_description": "not an http(s) URL: " + u})
			return
		}
	}
	if m.AuthMethod == "" {
		m.AuthMethod = "client_secret_basic" // RFC 7591 2's default
	}
	if !slices.Contains([]string{"client_secret_basic", "client_secret_post", "none"}, m.AuthMethod) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata", "error_description": "unsupported token_endpoint_auth_method " + m.AuthMethod})
		return
	}
	s.mu.Lock()
	s.registrations++
	n := s.registrations
	s.mu.Unlock()
	c := Client{ID: fmt.Sprintf("dcr-client-%d", n), RedirectURIs: m.RedirectURIs, AuthMethod: m.AuthMethod, Public: m.AuthMethod == "none"}
	if !c.Public {
		c.Secret = rand.Text()
	}
	if err := s.addClient(c); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error"})
		return
	}
	out := map[string]any{"client_id": c.ID, "client_name": m.ClientName, "redirect_uris": m.RedirectURIs,
		"token_endpoint_auth_method": m.AuthMethod, "grant_types": []string{GrantAuthorizationCode, GrantRefreshToken}}
	if c.Secret != "" {
		out["client_secret"] = c.Secret
	}
	writeJSON(w, http.StatusCreated, out)
}

// RegisterURL is the RFC 7591 registration endpoint.
func (s *Server) RegisterURL() string { return s.baseURL + "/register" }

// DocumentsFetched counts the client ID metadata documents fetched (CIMD).
func (s *Server) DocumentsFetched() int { return s.store.documentsFetched() }

// Registrations counts the clients registered at RegisterURL.
func (s *Server) Registrations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.registrations
}

// Resources are the RFC 8707 resource parameters of the authorization
// (GET) and token requests so far, in order ("" for one without).
func (s *Server) Resources() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.resources)
}
