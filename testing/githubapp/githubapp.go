// Package githubapp is a fake of GitHub's App authentication for tests: it
// checks the app's JWT (RS256 with the app's public key, iss the app's ID,
// at most 10 minutes long) the way GitHub does, issues 1-hour installation
// tokens narrowed as asked, and serves one API call that takes them.
package githubapp

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Server is a running fake.
type Server struct {
	*httptest.Server
	AppID          string
	InstallationID string
	Key            *rsa.PrivateKey
	// Repositories are the installation's repositories.
	Repositories []string

	mu       sync.Mutex
	tokens   map[string]Issued
	requests []TokenRequest
}

// Issued is a token the fake handed out.
type Issued struct {
	Repositories []string
	Permissions  map[string]string
	ExpiresAt    time.Time
}

// TokenRequest is what one access_tokens call carried.
type TokenRequest struct {
	// JWTLifetime is the app JWT's exp minus iat.
	JWTLifetime time.Duration
	Issuer      string
	Body        map[string]any
}

// Start runs a fake for an app with a fresh 2048-bit key.
func Start(appID, installationID string, repositories []string) (*Server, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	s := &Server{AppID: appID, InstallationID: installationID, Key: key, Repositories: repositories, tokens: map[string]Issued{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /app/installations/{id}/access_tokens", s.handleAccessTokens)
	mux.HandleFunc("GET /installation/repositories", s.handleRepositories)
	s.Server = httptest.NewServer(mux)
	return s, nil
}

// Requests are the access_tokens calls so far.
func (s *Server) Requests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRequest(nil), s.requests...)
}

func fail(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

func (s *Server) handleAccessTokens(w http.ResponseWriter, r *http.Request) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		fail(w, http.StatusUnauthorized, "A JSON web token could not be decoded")
		return
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		fail(w, http.StatusUnauthorized, "A JSON web token could not be decoded")
		return
	}
	var claims jwt.Claims
	if err := tok.Claims(&s.Key.PublicKey, &claims); err != nil {
		fail(w, http.StatusUnauthorized, "'Issuer' claim ('iss') must be an Integer")
		return
	}
	now := time.Now()
	if claims.IssuedAt == nil || claims.Expiry == nil {
		fail(w, http.StatusUnauthorized, "Missing 'issued at' or 'expiration time' claim")
		return
	}
	life := claims.Expiry.Time().Sub(claims.IssuedAt.Time())
	if life > 10*time.Minute || claims.Expiry.Time().Before(now) || claims.IssuedAt.Time().After(now.Add(time.Minute)) {
		fail(w, http.StatusUnauthorized, "'Expiration time' claim ('exp') is too far in the future")
		return
	}
	if claims.Issuer != s.AppID {
		fail(w, http.StatusUnauthorized, "Integration not found")
		return
	}
	if r.PathValue("id") != s.InstallationID {
		fail(w, http.StatusNotFound, "Not Found")
		return
	}
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	s.mu.Lock()
	s.requests = append(s.requests, TokenRequest{JWTLifetime: life, Issuer: claims.Issuer, Body: body})
	s.mu.Unlock()

	issued := Issued{Repositories: s.Repositories, Permissions: map[string]string{"contents": "read", "metadata": "read"}, ExpiresAt: now.Add(time.Hour).UTC().Truncate(time.Second)}
	if repos, ok := body["repositories"].([]any); ok {
		issued.Repositories = nil
		for _, rp := range repos {
			name, _ := rp.(string)
			if !slices.Contains(s.Repositories, name) {
				fail(w, http.StatusUnprocessableEntity, "There is at least one repository that does not exist or is not accessible to the parent installation.")
				return
			}
			issued.Repositories = append(issued.Repositories, name)
		}
	}
	if perms, ok := body["permissions"].(map[string]any); ok {
		issued.Permissions = map[string]string{}
		for k, v := range perms {
			issued.Permissions[k], _ = v.(string)
		}
	}
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	token := "ghs_" + hex.EncodeToString(b)
	s.mu.Lock()
	s.tokens[token] = issued
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token": token, "expires_at": issued.ExpiresAt.Format(time.RFC3339),
		"permissions": issued.Permissions, "repository_selection": "selected",
	})
}

func (s *Server) handleRepositories(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	token := strings.TrimPrefix(strings.TrimPrefix(auth, "Bearer "), "token ")
	s.mu.Lock()
	issued, ok := s.tokens[token]
	s.mu.Unlock()
	if !ok || time.Now().After(issued.ExpiresAt) {
		fail(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	var repos []map[string]string
	for _, name := range issued.Repositories {
		repos = append(repos, map[string]string{"name": name, "full_name": "acme/" + name})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"total_count": len(repos), "repositories": repos})
}
