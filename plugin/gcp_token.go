package credentials

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/clankteam/credentials/plugin/provider"
)

const (
	// saTokenMargin: a cached service-account token is not handed out
	// when it expires within this long.
	saTokenMargin = 5 * time.Minute
	// saCacheMax bounds the cache; it holds one entry per credential,
	// scope set and subject in use.
	saCacheMax = 10000
	maxScopes  = 50
)

// saTokenCache keeps minted service-account tokens in memory until shortly
// before they expire. Minting signs a JWT and calls Google, so the broker
// would otherwise pay that on every request.
type saTokenCache struct {
	// mu guards tokens.
	mu     sync.Mutex
	tokens map[string]saToken
	// flights shares one mint among concurrent requests for the same token.
	flights singleflight.Group
}

type saToken struct {
	token      string
	expiry     time.Time
	reuseUntil time.Time
}

func (c *saTokenCache) get(key string, now time.Time) (saToken, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.tokens[key]
	if !ok || !now.Before(t.reuseUntil) {
		return saToken{}, false
	}
	return t, true
}

func (c *saTokenCache) put(key string, t saToken, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tokens == nil {
		c.tokens = map[string]saToken{}
	}
	if len(c.tokens) >= saCacheMax {
		for k, old := range c.tokens {
			if !now.Before(old.reuseUntil) {
				delete(c.tokens, k)
			}
		}
		if len(c.tokens) >= saCacheMax {
			clear(c.tokens)
		}
	}
	c.tokens[key] = t
}

// mintServiceAccountToken implements serviceAccountToken: the JWT-bearer
// grant of golang.org/x/oauth2/google against the key's own token_uri
// (checked to be https, or loopback for tests, when the file was stored).
func (b *backend) mintServiceAccountToken(ctx context.Context, c *credential, scopes []string, subject string) (string, time.Time, error) {
	if c == nil || c.Type != typeFile || c.ServiceAccount == nil {
		return "", time.Time{}, fmt.Errorf("credential is not a GCP service-account key")
	}
	scopes = normaliseScopes(scopes)
	if len(scopes) == 0 {
		if svc, ok := builtinServices[c.Service]; ok && svc.OAuth != nil {
			scopes = normaliseScopes(svc.OAuth.DefaultScopes)
		}
	}
	if len(scopes) == 0 || len(scopes) > maxScopes {
		return "", time.Time{}, fmt.Errorf("give 1-%d scopes for a service-account token", maxScopes)
	}
	for _, sc := range scopes {
		if strings.ContainsAny(sc, " \t\r\n") || hasControl(sc) {
			return "", time.Time{}, fmt.Errorf("scope %q is not a single scope", clip(sc, 80))
		}
	}
	if subject != "" && (len(subject) > 256 || !strings.Contains(subject, "@") || strings.ContainsAny(subject, " \t\r\n") || hasControl(subject)) {
		return "", time.Time{}, fmt.Errorf("subject must be the email address of the user to act as")
	}

	// The key's hash, not its name alone: replacing the file must not
	// reuse tokens of the old key.
	key := strings.Join([]string{c.Name, tokenHash(string(c.File)), strings.Join(scopes, " "), subject}, "\x00")
	t, err := b.mintCached(ctx, &b.oauth.saTokens, key, func(ctx context.Context) (*provider.Token, error) {
		tok, pe := b.oauth.provider.ServiceAccountToken(ctx, c.File, scopes, subject)
		if pe != nil {
			b.logger.Warn("minting a service-account token failed", "name", c.Name, "code", pe.Code, "status", pe.Status)
			return nil, fmt.Errorf("credential %s: %w", c.Name, pe)
		}
		b.logger.Debug("service-account token minted", "name", c.Name, "delegated", subject != "")
		return tok, nil
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return t.token, t.expiry, nil
}

// mintCached returns cache's token under key, or mints one (concurrent
// callers of a key share one mint) and keeps it until shortly before it
// expires: its lifetime is applied to the engine's clock.
func (b *backend) mintCached(ctx context.Context, cache *saTokenCache, key string, mint func(context.Context) (*provider.Token, error)) (saToken, error) {
	if t, ok := cache.get(key, b.now()); ok {
		return t, nil
	}
	v, err, _ := cache.flights.Do(key, func() (interface{}, error) {
		// The mint outlives a caller that gives up: the others share it.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.oauth.http.Timeout())
		defer cancel()
		tok, err := mint(mctx)
		if err != nil {
			return nil, err
		}
		now := b.now()
		lifetime := defaultMaxTokenLifetime
		if tok.ExpiresIn > 0 {
			lifetime = time.Duration(tok.ExpiresIn) * time.Second
		}
		t := saToken{token: tok.AccessToken, expiry: now.Add(lifetime)}
		t.reuseUntil = t.expiry.Add(-min(saTokenMargin, lifetime/2))
		cache.put(key, t, now)
		return t, nil
	})
	if err != nil {
		return saToken{}, err
	}
	return v.(saToken), nil
}

// normaliseScopes trims, drops empties and duplicates, and sorts, so that
// the same request finds the same cached token.
func normaliseScopes(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}
