package provider

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// GitHub App installation tokens: the app's private key signs a short JWT
// (RS256, iss = the app's ID or client ID, at most 10 minutes), which
// GitHub exchanges for a 1-hour installation token, optionally narrowed to
// repositories and permissions. The key signs here and never leaves.

// GitHubInstallation is one installation token request.
type GitHubInstallation struct {
	// APIURL is the API's base, https://api.github.com (or a GitHub
	// Enterprise Server's /api/v3).
	APIURL         string
	AppID          string
	InstallationID int64
	Key            *rsa.PrivateKey
	// Repositories and Permissions narrow the token; empty: the
	// installation's own.
	Repositories []string
	Permissions  map[string]string
}

// appJWTLifetime stays under GitHub's 10-minute limit with room for clock
// skew; iat is backdated by a minute as GitHub advises.
const appJWTLifetime = 9 * time.Minute

// AppJWT is the app's JWT at now.
func AppJWT(appID string, key *rsa.PrivateKey, now time.Time) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(jwt.Claims{
		Issuer:   appID,
		IssuedAt: jwt.NewNumericDate(now.Add(-time.Minute)),
		Expiry:   jwt.NewNumericDate(now.Add(appJWTLifetime)),
	}).Serialize()
}

func (h *HTTP) GitHubAppToken(ctx context.Context, in GitHubInstallation) (*Token, *Error) {
	assertion, err := AppJWT(in.AppID, in.Key, time.Now())
	if err != nil {
		return nil, &Error{Kind: Refused, Msg: "signing the app's JWT failed"}
	}
	body := map[string]any{}
	if len(in.Repositories) > 0 {
		body["repositories"] = in.Repositories
	}
	if len(in.Permissions) > 0 {
		body["permissions"] = in.Permissions
	}
	raw, _ := json.Marshal(body)
	target := strings.TrimSuffix(in.APIURL, "/") + "/app/installations/" + url.PathEscape(strconv.FormatInt(in.InstallationID, 10)) + "/access_tokens"
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(raw))
	if err != nil {
		return nil, &Error{Kind: Refused, Msg: "the GitHub API URL is not usable"}
	}
	req.Header.Set("Authorization", "Bearer "+assertion)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, classify(err, "minting an installation token", assertion)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode != http.StatusCreated {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(answer, &e)
		pe := statusError("minting an installation token", resp.StatusCode, "", e.Message, nil, assertion)
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusNotFound {
			// A wrong app ID or key, or an installation gone: a person acts.
			pe.Kind = Refused
		}
		return nil, pe
	}
	var tok struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(answer, &tok); err != nil || tok.Token == "" {
		return nil, &Error{Kind: Transient, Msg: "minting an installation token: GitHub's answer holds no token"}
	}
	t := &Token{AccessToken: tok.Token, TokenType: "token"}
	if !tok.ExpiresAt.IsZero() {
		t.ExpiresIn = int64(time.Until(tok.ExpiresAt) / time.Second)
	}
	if t.ExpiresIn <= 0 {
		t.ExpiresIn = int64(time.Hour / time.Second)
	}
	return t, nil
}

func (f *Fake) GitHubAppToken(context.Context, GitHubInstallation) (*Token, *Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		return nil, f.Fail
	}
	f.n++
	f.minted++
	return &Token{AccessToken: fmt.Sprintf("ghs_fake%d", f.n), TokenType: "token", ExpiresIn: 3600}, nil
}
