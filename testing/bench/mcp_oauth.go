package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"

	"golang.org/x/oauth2"

	"github.com/clankteam/credentials/portal/provision"
)

// The OAuth front door of /mcp/<org>, driven over HTTP as an MCP client and
// a person would: the client registers (RFC 7591), the person signs in and
// approves on the consent page, the client redeems the code with PKCE and
// then calls tools with the access token, refreshing it when it expires.
// Its scenario is the mcp scenario's call with that token in place of the
// agent's AppRole token: the difference is the front door's cost.

const (
	benchPerson   = "bench-person"
	benchPersonPw = "bench-person-password-1"
	oauthAgent    = "bench-oauth"
	loopback      = "http://127.0.0.1:1/callback"
)

// mcpOAuth is the bench's signed-in MCP client.
type mcpOAuth struct {
	mu  sync.Mutex
	src oauth2.TokenSource
}

func (o *mcpOAuth) token() (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	t, err := o.src.Token()
	if err != nil {
		return "", err
	}
	return t.AccessToken, nil
}

// signInMCPClient makes a person who may manage agents, and goes through
// registration, consent and the code exchange.
func (st *stack) signInMCPClient(ctx context.Context) (*mcpOAuth, error) {
	root := st.vault.Client()
	if err := provision.CreatePerson(ctx, root, org, benchPerson, benchPersonPw, provision.RoleAdmin); err != nil {
		return nil, err
	}
	user, err := root.Logical().ReadWithContext(ctx, "auth/userpass/users/"+benchPerson)
	if err != nil {
		return nil, err
	}
	policies := []string{provision.AgentsPolicy(org)}
	for _, p := range user.Data["token_policies"].([]any) {
		policies = append(policies, p.(string))
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/userpass/users/"+benchPerson, map[string]any{"token_policies": strings.Join(policies, ",")}); err != nil {
		return nil, err
	}

	clientID, err := st.registerMCPClient(ctx)
	if err != nil {
		return nil, err
	}
	resource := st.portalURL + "/mcp/" + org
	cfg := &oauth2.Config{ClientID: clientID, RedirectURL: loopback, Scopes: []string{"mcp"},
		Endpoint: oauth2.Endpoint{AuthURL: st.portalURL + "/oauth/authorize", TokenURL: st.portalURL + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams}}
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("bench-state", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", resource))

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if _, err := form(ctx, browser, st.portalURL+"/signin", url.Values{"method": {"userpass"}, "username": {benchPerson}, "password": {benchPersonPw}}); err != nil {
		return nil, fmt.Errorf("signing in: %w", err)
	}
	resp, err := form(ctx, browser, authURL, url.Values{"decision": {"approve"}, "agent": {"new"}, "new_agent": {oauthAgent}, "credential": {cred}})
	if err != nil {
		return nil, fmt.Errorf("approving: %w", err)
	}
	back, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || back.Query().Get("code") == "" {
		return nil, fmt.Errorf("the approval answered %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	tok, err := cfg.Exchange(context.WithValue(ctx, oauth2.HTTPClient, st.client), back.Query().Get("code"),
		oauth2.VerifierOption(verifier), oauth2.SetAuthURLParam("resource", resource))
	if err != nil {
		return nil, fmt.Errorf("redeeming the code: %w", err)
	}
	return &mcpOAuth{src: cfg.TokenSource(context.WithValue(context.Background(), oauth2.HTTPClient, st.client), tok)}, nil
}

// registerMCPClient registers a public client with a loopback redirect.
func (st *stack) registerMCPClient(ctx context.Context) (string, error) {
	body, _ := json.Marshal(map[string]any{"client_name": "bench MCP client", "redirect_uris": []string{loopback},
		"grant_types": []string{"authorization_code", "refresh_token"}, "token_endpoint_auth_method": "none"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, st.portalURL+"/oauth/register", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := st.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		ClientID string `json:"client_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.ClientID == "" {
		return "", fmt.Errorf("registration answered %d", resp.StatusCode)
	}
	return out.ClientID, nil
}

// form posts a form and wants a redirect (the portal's answer to a good
// sign-in and to an approval).
func form(ctx context.Context, c *http.Client, u string, v url.Values) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(v.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 3 {
		return resp, fmt.Errorf("answered %d, not a redirect", resp.StatusCode)
	}
	return resp, nil
}

// mcpOAuthScenario is the mcp scenario's tool call with the OAuth token.
func (st *stack) mcpOAuthScenario() scenario {
	return scenario{"mcp-oauth", "the same tool call with an OAuth access token", func(ctx context.Context) error {
		if st.mcpClient == nil {
			return errors.New("the MCP client did not sign in")
		}
		tok, err := st.mcpClient.token()
		if err != nil {
			return err
		}
		return checkToolCall(st.postAs(ctx, tok, st.portalURL+"/mcp/"+org, mcpToolCall, "application/json, text/event-stream"))
	}}
}
