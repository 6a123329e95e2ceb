package portal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

const (
	sessionCookie = "portal_session"
	flashCookie   = "portal_flash"
	sessionKeyLen = 32
	// maxSessionLife caps a session even when the Vault token lives longer
	// (or forever, like a root token).
	maxSessionLife = 12 * time.Hour
	// maxPending bounds the OAuth connects one session may have in flight,
	// which keeps the cookie small.
	maxPending = 4
	// sealVersion is the first byte of every sealed value, so the format can
	// change without misreading old cookies: 2 names its key, 1 did not.
	sealVersion     = 2
	sealVersionNoID = 1
)

// session is what a signed-in person's cookie holds, sealed: nothing in it
// is readable or changeable without the key.
type session struct {
	// Token is the person's own Vault token; every request they make runs
	// with it.
	Token string `json:"t"`
	// User is the name shown in the header (the Vault display name).
	User string `json:"u"`
	// Expires is when the session ends (unix seconds): the token's expiry,
	// capped at maxSessionLife.
	Expires int64 `json:"e"`
	// Pending are OAuth connects this session started and whose callback
	// it awaits; a callback whose state is not here is refused.
	Pending []pendingConnect `json:"p,omitempty"`
	// Used names (by a short hash) the last few states whose callback
	// came, so that a second callback is told it came twice.
	Used []string `json:"x,omitempty"`
}

// maxUsedStates bounds Used: the cookie stays small.
const maxUsedStates = 4

// Why a callback's state was refused.
const (
	stateUnknown = "unknown"
	stateExpired = "expired"
	stateUsed    = "used"
)

func stateHash(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:6])
}

// pendingConnect binds one OAuth connect to the session that started it.
type pendingConnect struct {
	Org     string `json:"o"`
	Cred    string `json:"c"`
	State   string `json:"s"`
	Expires int64  `json:"e"`
}

// flash is a one-time message shown on the next page.
type flash struct {
	Kind    string `json:"k"` // "ok" or "error"
	Message string `json:"m"`
}

// sealer encrypts and authenticates cookie values with AES-256-GCM. The
// cookie's name is bound in as additional data, so a value sealed for one
// cookie is refused as another.
type sealer struct {
	// keys seal with the first and open with any.
	keys []sealKey
}

type sealKey struct {
	id   string
	aead cipher.AEAD
}

func newSealer(keys ...[]byte) (*sealer, error) {
	ring := make([]SessionKey, len(keys))
	for i, k := range keys {
		ring[i] = SessionKey{Key: k}
	}
	return newKeyRing(ring)
}

// SessionKey is one key of the ring that seals session cookies. ID names
// it in every value it seals, so that values sealed with older keys still
// open while a new key is rolled out; empty, it is derived from the key.
type SessionKey struct {
	ID  string
	Key []byte
}

// sessionKeyID derives a key's id from the key, so that ids never collide
// by accident and need not be configured.
func sessionKeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("portal session key id\x00"), key...))
	return hex.EncodeToString(sum[:4])
}

// newKeyRing seals with the first key and opens with any.
func newKeyRing(keys []SessionKey) (*sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("portal: no session key")
	}
	s := &sealer{}
	seen := map[string]bool{}
	for _, k := range keys {
		if len(k.Key) != sessionKeyLen {
			return nil, fmt.Errorf("portal: session key must be %d bytes, not %d", sessionKeyLen, len(k.Key))
		}
		id := k.ID
		if id == "" {
			id = sessionKeyID(k.Key)
		}
		if len(id) > 32 || seen[id] {
			return nil, fmt.Errorf("portal: session key id %q is too long or used twice", id)
		}
		seen[id] = true
		block, err := aes.NewCipher(k.Key)
		if err != nil {
			return nil, fmt.Errorf("portal: session key: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("portal: session key: %w", err)
		}
		s.keys = append(s.keys, sealKey{id: id, aead: aead})
	}
	return s, nil
}

// seal seals v with the newest key: version, key id, nonce, ciphertext.
func (s *sealer) seal(name string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encoding %s: %w", name, err)
	}
	k := s.keys[0]
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("sealing %s: %w", name, err)
	}
	out := append([]byte{sealVersion, byte(len(k.id))}, k.id...)
	out = append(out, nonce...)
	out = k.aead.Seal(out, nonce, plain, []byte(name))
	clear(plain)
	return base64.RawURLEncoding.EncodeToString(out), nil
}

var errBadSeal = errors.New("sealed value is invalid")

// open opens a value sealed with any key of the ring; values of the first
// format (no key id) are tried with each key.
func (s *sealer) open(name, value string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < 2 {
		return errBadSeal
	}
	var plain []byte
	switch raw[0] {
	case sealVersion:
		n := int(raw[1])
		if len(raw) < 2+n {
			return errBadSeal
		}
		id, rest := string(raw[2:2+n]), raw[2+n:]
		for _, k := range s.keys {
			if k.id == id {
				plain, err = openWith(k.aead, name, rest)
				break
			}
		}
	case sealVersionNoID:
		for _, k := range s.keys {
			if plain, err = openWith(k.aead, name, raw[1:]); err == nil {
				break
			}
		}
	}
	if plain == nil || err != nil {
		return errBadSeal
	}
	defer clear(plain)
	if err := json.Unmarshal(plain, v); err != nil {
		return errBadSeal
	}
	return nil
}

func openWith(aead cipher.AEAD, name string, raw []byte) ([]byte, error) {
	ns := aead.NonceSize()
	if len(raw) < ns+aead.Overhead() {
		return nil, errBadSeal
	}
	return aead.Open(nil, raw[:ns], raw[ns:], []byte(name))
}

// cookieName is the name a cookie goes by: under TLS with the __Host-
// prefix, which browsers accept only from a secure origin, for the whole
// host (Path=/, no Domain), so that a sibling subdomain or a plain-http
// page cannot plant or overwrite it. The sealed value is bound to the
// base name either way.
func (s *Server) cookieName(r *http.Request, base string) string {
	if s.secureCookies(r) {
		return "__Host-" + base
	}
	return base
}

// readSession returns the request's valid session, or nil.
func (s *Server) readSession(r *http.Request) *session {
	c, err := r.Cookie(s.cookieName(r, sessionCookie))
	if err != nil {
		return nil
	}
	sess := new(session)
	if err := s.sessions.open(sessionCookie, c.Value, sess); err != nil {
		return nil
	}
	if sess.Token == "" || s.now().Unix() >= sess.Expires {
		return nil
	}
	return sess
}

// writeSession sets the session cookie. The cookie is HttpOnly (no script
// reads it), SameSite=Lax (sent on top-level navigations such as the OAuth
// provider's redirect back, not on cross-site posts) and Secure under TLS.
func (s *Server) writeSession(w http.ResponseWriter, r *http.Request, sess *session) error {
	now := s.now().Unix()
	live := sess.Pending[:0]
	for _, p := range sess.Pending {
		if p.Expires > now {
			live = append(live, p)
		}
	}
	if len(live) > maxPending {
		live = live[len(live)-maxPending:]
	}
	sess.Pending = live
	value, err := s.sessions.seal(sessionCookie, sess)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name:     s.cookieName(r, sessionCookie),
		Value:    value,
		Path:     "/",
		Expires:  time.Unix(sess.Expires, 0),
		MaxAge:   int(sess.Expires - now),
		HttpOnly: true,
		Secure:   s.secureCookies(r),
		SameSite: http.SameSiteLaxMode,
	})
	return nil
}

func (s *Server) clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(r, sessionCookie), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.secureCookies(r), SameSite: http.SameSiteLaxMode,
	})
}

// takePending removes and returns the session's pending connect with
// state, if any; states are compared in constant time.
func (sess *session) takePending(state string, now time.Time) (pendingConnect, bool) {
	p, why := sess.takePendingWhy(state, now)
	return p, why == ""
}

// takePendingWhy is takePending that says why a state was refused:
// stateUnknown, stateExpired or stateUsed.
func (sess *session) takePendingWhy(state string, now time.Time) (pendingConnect, string) {
	for i, p := range sess.Pending {
		if subtle.ConstantTimeCompare([]byte(p.State), []byte(state)) == 1 {
			sess.Pending = append(sess.Pending[:i], sess.Pending[i+1:]...)
			sess.Used = append(sess.Used, stateHash(state))
			if len(sess.Used) > maxUsedStates {
				sess.Used = sess.Used[len(sess.Used)-maxUsedStates:]
			}
			if p.Expires <= now.Unix() {
				return p, stateExpired
			}
			return p, ""
		}
	}
	for _, h := range sess.Used {
		if h == stateHash(state) {
			return pendingConnect{}, stateUsed
		}
	}
	return pendingConnect{}, stateUnknown
}

// setFlash leaves a message for the next page the person sees.
func (s *Server) setFlash(w http.ResponseWriter, r *http.Request, kind, msg string) {
	value, err := s.sessions.seal(flashCookie, flash{Kind: kind, Message: msg})
	if err != nil {
		s.logger.Error("sealing flash", "error", err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(r, flashCookie), Value: value, Path: "/", MaxAge: 60,
		HttpOnly: true, Secure: s.secureCookies(r), SameSite: http.SameSiteLaxMode,
	})
}

// takeFlash returns the pending message, if any, and clears it.
func (s *Server) takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	c, err := r.Cookie(s.cookieName(r, flashCookie))
	if err != nil {
		return nil
	}
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(r, flashCookie), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.secureCookies(r), SameSite: http.SameSiteLaxMode,
	})
	f := new(flash)
	if err := s.sessions.open(flashCookie, c.Value, f); err != nil {
		return nil
	}
	return f
}
