package provider

import (
	"context"
	"fmt"
	"net/url"
	"sync"
)

// Fake is a Client for tests: a provider in memory that exchanges the
// codes it was given, issues tokens of a set lifetime, rotates refresh
// tokens when told to, refuses spent ones as a single-use provider does,
// and records every call.
type Fake struct {
	mu sync.Mutex
	// Lifetime is the expires_in of issued access tokens, in seconds.
	Lifetime int64
	// Rotate issues a new refresh token on each refresh and ends the old.
	Rotate bool
	// Fail, when set, is the answer to every Exchange and Refresh.
	Fail *Error
	// Who is the account Account answers.
	Who Account
	// Discovery is what Discover answers.
	Discovery *Discovery
	// MCP is what DiscoverMCP answers.
	MCP *MCPServer
	// Hold, when set, makes Refresh wait until it is closed: a slow
	// provider.
	Hold chan struct{}

	codes      map[string]bool
	live       map[string]bool
	n          int
	refreshes  int
	minted     int
	revoked    []string
	registered int
}

// NewFake is a provider that issues hour-long tokens.
func NewFake() *Fake {
	return &Fake{Lifetime: 3600, codes: map[string]bool{}, live: map[string]bool{}, Who: Account{Subject: "u-1", Label: "user@example.com"}}
}

// AddCode makes code exchangeable once.
func (f *Fake) AddCode(code string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.codes[code] = true
}

// Refreshes counts refresh requests.
func (f *Fake) Refreshes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refreshes
}

// Revoked lists the tokens revoked, in order.
func (f *Fake) Revoked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.revoked...)
}

// Live says whether refresh token rt still works.
func (f *Fake) Live(rt string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[rt]
}

func (f *Fake) issue() *Token {
	f.n++
	rt := fmt.Sprintf("fake-refresh-%d", f.n)
	f.live[rt] = true
	return &Token{AccessToken: fmt.Sprintf("fake-access-%d", f.n), RefreshToken: rt, TokenType: "Bearer", ExpiresIn: f.Lifetime}
}

func (f *Fake) AuthCodeURL(spec *Spec, app App, r AuthRequest) string {
	q := url.Values{"client_id": {app.ClientID}, "state": {r.State}, "redirect_uri": {r.RedirectURL}, "scope": {spec.Scopes(r.Scopes)}}
	if r.Verifier != "" {
		q.Set("code_challenge_method", "S256")
	}
	return spec.AuthURL + "?" + q.Encode()
}

func (f *Fake) Exchange(_ context.Context, _ *Spec, _ App, _, code, _ string) (*Token, *Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		return nil, f.Fail
	}
	if !f.codes[code] {
		return nil, statusError("exchanging the code", 400, "invalid_grant", "", nil, code)
	}
	delete(f.codes, code)
	return f.issue(), nil
}

func (f *Fake) Refresh(ctx context.Context, _ *Spec, _ App, refreshToken string) (*Token, *Error) {
	f.mu.Lock()
	hold := f.Hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, &Error{Kind: Transient, Msg: "refresh: the provider did not answer in time"}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshes++
	if f.Fail != nil {
		return nil, f.Fail
	}
	if !f.live[refreshToken] {
		return nil, statusError("refresh", 400, "invalid_grant", "", nil, refreshToken)
	}
	if !f.Rotate {
		f.n++
		return &Token{AccessToken: fmt.Sprintf("fake-access-%d", f.n), TokenType: "Bearer", ExpiresIn: f.Lifetime}, nil
	}
	delete(f.live, refreshToken)
	return f.issue(), nil
}

func (f *Fake) Revoke(_ context.Context, name string, spec *Spec, _ App, t Tokens) *Receipt {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := NewReceipt(name, spec.RevokeStyle)
	for _, tk := range []struct{ kind, token string }{{"refresh_token", t.Refresh}, {"access_token", t.Access}} {
		if tk.token == "" {
			continue
		}
		delete(f.live, tk.token)
		f.revoked = append(f.revoked, tk.token)
		r.revoked(tk.kind)
	}
	return r
}

func (f *Fake) Account(context.Context, *Spec, string) (Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Who, nil
}

func (f *Fake) ServiceAccountToken(context.Context, []byte, []string, string) (*Token, *Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		return nil, f.Fail
	}
	f.n++
	return &Token{AccessToken: fmt.Sprintf("fake-sa-%d", f.n), TokenType: "Bearer", ExpiresIn: f.Lifetime}, nil
}

// ClientCredentials issues an app-only token (no refresh token).
func (f *Fake) ClientCredentials(context.Context, *Spec, App, []string) (*Token, *Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		return nil, f.Fail
	}
	f.n++
	f.minted++
	return &Token{AccessToken: fmt.Sprintf("fake-app-%d", f.n), TokenType: "Bearer", ExpiresIn: f.Lifetime}, nil
}

// Minted counts client credentials grants.
func (f *Fake) Minted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.minted
}

// Discover answers Discovery, when set.
func (f *Fake) Discover(_ context.Context, url string) (*Discovery, *Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Discovery == nil {
		return nil, &Error{Kind: Refused, Msg: "discovery: no document at " + url}
	}
	d := *f.Discovery
	return &d, nil
}

// DiscoverMCP answers MCP, when set.
func (f *Fake) DiscoverMCP(_ context.Context, mcpURL string) (*MCPServer, *Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.MCP == nil {
		return nil, &Error{Kind: Refused, Msg: "the MCP server publishes no protected-resource metadata (RFC 9728): " + mcpURL}
	}
	m := *f.MCP
	return &m, nil
}

// Register hands out client IDs fake-client-1, 2, ...
func (f *Fake) Register(_ context.Context, regURL, _, _, _ string) (*Registration, *Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if regURL == "" {
		return nil, &Error{Kind: Refused, Msg: "no registration endpoint"}
	}
	f.registered++
	return &Registration{ClientID: fmt.Sprintf("fake-client-%d", f.registered), ClientSecret: fmt.Sprintf("fake-secret-%d", f.registered), AuthMethod: AuthSecretPost}, nil
}

var _ Client = (*Fake)(nil)
var _ Client = (*HTTP)(nil)
