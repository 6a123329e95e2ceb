package oauthserver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ory/fosite"
)

// tokenState records why a token stopped working, so tests can tell an
// explicit revocation apart from a normal refresh-token rotation.
type tokenState int

const (
	stateActive tokenState = iota
	stateRotated
	stateRevoked
)

type tokenEntry struct {
	req   fosite.Requester
	state tokenState
}

type codeEntry struct {
	req    fosite.Requester
	active bool
}

// ctxKey marks per-request storage behaviour that a quirk needs.
type ctxKey int

// keepRefreshKey: the refresh grant must not rotate (OmitRefreshTokenOnRefresh),
// so the presented refresh token and its family stay valid.
const keepRefreshKey ctxKey = 1

// store is fosite's storage. fosite's own storage.MemoryStore writes a map
// under the wrong mutex in RevokeRefreshToken and forgets why a token died,
// so this one guards everything with one mutex and keeps tombstones.
type store struct {
	mu      sync.Mutex
	clients map[string]fosite.Client
	codes   map[string]*codeEntry
	pkce    map[string]fosite.Requester
	access  map[string]*tokenEntry // by signature
	refresh map[string]*tokenEntry // by signature
	jtis    map[string]time.Time
	// cimd: client IDs that are URLs name metadata documents; fetched
	// counts the documents fetched.
	cimd    bool
	fetched int
}

func newStore(cimd bool) *store {
	return &store{
		cimd:    cimd,
		clients: map[string]fosite.Client{},
		codes:   map[string]*codeEntry{},
		pkce:    map[string]fosite.Requester{},
		access:  map[string]*tokenEntry{},
		refresh: map[string]*tokenEntry{},
		jtis:    map[string]time.Time{},
	}
}

func (s *store) setClient(c fosite.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[c.GetID()] = c
}

// --- fosite.ClientManager

func (s *store) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	s.mu.Lock()
	c, ok := s.clients[id]
	cimd := s.cimd
	s.mu.Unlock()
	if ok {
		return c, nil
	}
	if cimd && (strings.HasPrefix(id, "https://") || strings.HasPrefix(id, "http://")) {
		return s.clientFromDocument(ctx, id)
	}
	return nil, fosite.ErrNotFound
}

// clientFromDocument fetches the client metadata document at id: a public
// client whose client_id is id, with the document's redirect URIs.
func (s *store) clientFromDocument(ctx context.Context, id string) (fosite.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return nil, fosite.ErrNotFound
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fosite.ErrNotFound
	}
	defer resp.Body.Close()
	var doc struct {
		ClientID     string   `json:"client_id"`
		RedirectURIs []string `json:"redirect_uris"`
		AuthMethod   string   `json:"token_endpoint_auth_method"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&doc) != nil ||
		doc.ClientID != id || len(doc.RedirectURIs) == 0 || (doc.AuthMethod != "" && doc.AuthMethod != "none") {
		return nil, fosite.ErrNotFound
	}
	c := &fosite.DefaultOpenIDConnectClient{TokenEndpointAuthMethod: "none", DefaultClient: &fosite.DefaultClient{
		ID: id, RedirectURIs: doc.RedirectURIs, Public: true, Scopes: []string{"*"},
		GrantTypes: []string{GrantAuthorizationCode, GrantRefreshToken}, ResponseTypes: []string{"code"},
	}}
	s.mu.Lock()
	s.fetched++
	s.mu.Unlock()
	return c, nil
}

// documentsFetched counts the client metadata documents fetched.
func (s *store) documentsFetched() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetched
}

func (s *store) ClientAssertionJWTValid(_ context.Context, jti string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if exp, ok := s.jtis[jti]; ok && exp.After(time.Now()) {
		return fosite.ErrJTIKnown
	}
	return nil
}

func (s *store) SetClientAssertionJWT(_ context.Context, jti string, exp time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.jtis {
		if e.Before(time.Now()) {
			delete(s.jtis, k)
		}
	}
	if e, ok := s.jtis[jti]; ok && e.After(time.Now()) {
		return fosite.ErrJTIKnown
	}
	s.jtis[jti] = exp
	return nil
}

// --- oauth2.AuthorizeCodeStorage

func (s *store) CreateAuthorizeCodeSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[sig] = &codeEntry{req: req, active: true}
	return nil
}

func (s *store) GetAuthorizeCodeSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.codes[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	if !e.active {
		// fosite needs the request back to revoke tokens minted from a replayed code.
		return e.req, fosite.ErrInvalidatedAuthorizeCode
	}
	return e.req, nil
}

func (s *store) InvalidateAuthorizeCodeSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.codes[sig]
	if !ok {
		return fosite.ErrNotFound
	}
	e.active = false
	return nil
}

// --- pkce.PKCERequestStorage

func (s *store) CreatePKCERequestSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pkce[sig] = req
	return nil
}

func (s *store) GetPKCERequestSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.pkce[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return r, nil
}

func (s *store) DeletePKCERequestSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pkce, sig)
	return nil
}

// --- oauth2.AccessTokenStorage

func (s *store) CreateAccessTokenSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.access[sig] = &tokenEntry{req: req}
	return nil
}

func (s *store) GetAccessTokenSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.access[sig]
	if !ok || e.state != stateActive {
		return nil, fosite.ErrNotFound
	}
	return e.req, nil
}

func (s *store) DeleteAccessTokenSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.access, sig)
	return nil
}

// --- oauth2.RefreshTokenStorage / TokenRevocationStorage

func (s *store) CreateRefreshTokenSession(ctx context.Context, sig, _ string, req fosite.Requester) error {
	if ctx.Value(keepRefreshKey) != nil {
		// The response will not carry this token, and storing it would make it
		// the family's newest member for no one; the presented token stays live.
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh[sig] = &tokenEntry{req: req}
	return nil
}

func (s *store) GetRefreshTokenSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.refresh[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	if e.state != stateActive {
		// fosite's reuse detection needs the request to revoke the family.
		return e.req, fosite.ErrInactiveToken
	}
	return e.req, nil
}

func (s *store) DeleteRefreshTokenSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.refresh, sig)
	return nil
}

func (s *store) RotateRefreshToken(ctx context.Context, requestID, _ string) error {
	if ctx.Value(keepRefreshKey) != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.markFamily(s.refresh, requestID, stateRotated)
	s.markFamily(s.access, requestID, stateRotated)
	return nil
}

func (s *store) RevokeRefreshToken(_ context.Context, requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.markFamily(s.refresh, requestID, stateRevoked)
	return nil
}

func (s *store) RevokeAccessToken(_ context.Context, requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.markFamily(s.access, requestID, stateRevoked)
	return nil
}

// markFamily ends every still-active token of one grant (fosite keeps the
// request ID across rotations, so the ID names the whole family).
// Caller holds s.mu.
func (s *store) markFamily(m map[string]*tokenEntry, requestID string, st tokenState) {
	for _, e := range m {
		if e.state == stateActive && e.req.GetID() == requestID {
			e.state = st
		}
	}
}

// lookupState reports the recorded state of the access token, else the
// refresh token, with these signatures.
func (s *store) lookupState(accessSig, refreshSig string) (tokenState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.access[accessSig]; ok {
		return e.state, true
	}
	if e, ok := s.refresh[refreshSig]; ok {
		return e.state, true
	}
	return 0, false
}

// sha256Hasher replaces fosite's bcrypt default: bcrypt at cost 12 costs a
// quarter second per token call, which makes race-enabled tests crawl.
type sha256Hasher struct{}

func (sha256Hasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	h := sha256.Sum256(data)
	return h[:], nil
}

func (sha256Hasher) Compare(_ context.Context, hash, data []byte) error {
	h := sha256.Sum256(data)
	if subtle.ConstantTimeCompare(hash, h[:]) != 1 {
		return errors.New("client secret mismatch")
	}
	return nil
}
