// Command client drives the engine's MCP OAuth client for the MCP
// conformance suite's client scenarios (conformance client --suite auth
// --command <this binary>). The suite starts a remote MCP server and its
// authorization server for each scenario and runs this command with the
// server's URL as the last argument; the command does what an org admin and
// an agent would:
//
//  1. writes a service naming the server (mcp_url: the engine discovers its
//     authorization server), an app (registered by the engine, by the
//     portal's client metadata document, or the suite's pre-registered
//     client) and an oauth2 credential, all through Vault;
//  2. connects it: the suite's authorization server approves at once, and
//     the code goes back to the engine's callback;
//  3. creates an agent allowed the credential and calls the server's
//     test-tool through the portal's /mcp/<org>, with the agent's own token.
//
// It exits non-zero, saying why on stderr, when a step fails. The suite
// scores what its servers saw. Nothing it prints is secret: the suite's
// client secrets are test values and no token is printed.
//
// Environment (set by testing/integration's conformance test):
//
//	CONFORMANCE_VAULT_ADDR     the Vault the engine runs in
//	CONFORMANCE_ADMIN_TOKEN    a token of the org's admins
//	CONFORMANCE_AGENTS_TOKEN   a token of the org's agents policy (creates agents)
//	CONFORMANCE_ORG            the org
//	CONFORMANCE_PORTAL         the portal's URL
//	MCP_CONFORMANCE_SCENARIO   set by the suite: the scenario's name
//	MCP_CONFORMANCE_CONTEXT    set by the suite for some: JSON, e.g. a pre-registered client
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: client <mcp-server-url> (run by the MCP conformance suite)")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	if err := run(ctx, os.Args[len(os.Args)-1]); err != nil {
		fmt.Fprintln(os.Stderr, "conformance client:", err)
		os.Exit(1)
	}
}

// scenarioContext is what the suite gives some scenarios.
type scenarioContext struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

func run(ctx context.Context, serverURL string) error {
	env := func(k string) string { return os.Getenv(k) }
	org := env("CONFORMANCE_ORG")
	if org == "" || env("CONFORMANCE_VAULT_ADDR") == "" || env("CONFORMANCE_PORTAL") == "" {
		return errors.New("CONFORMANCE_VAULT_ADDR, CONFORMANCE_ORG and CONFORMANCE_PORTAL must be set")
	}
	var sc scenarioContext
	if raw := env("MCP_CONFORMANCE_CONTEXT"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &sc); err != nil {
			return fmt.Errorf("MCP_CONFORMANCE_CONTEXT: %w", err)
		}
	}
	name := credName(env("MCP_CONFORMANCE_SCENARIO"))
	admin, err := vaultClient(env("CONFORMANCE_VAULT_ADDR"), env("CONFORMANCE_ADMIN_TOKEN"))
	if err != nil {
		return err
	}
	mount := contract.Mount(org)
	write := func(path string, data map[string]interface{}) (*api.Secret, error) {
		s, err := admin.Logical().WriteWithContext(ctx, mount+"/"+path, data)
		if err != nil {
			return nil, fmt.Errorf("vault write %s: %w", path, err)
		}
		return s, nil
	}

	if _, err := write("services/"+name, map[string]interface{}{"types": "oauth2", "mcp_url": serverURL}); err != nil {
		return err
	}
	app := map[string]interface{}{"service": name, "register": true}
	if sc.ClientID != "" {
		app = map[string]interface{}{"service": name, "client_id": sc.ClientID, "client_secret": sc.ClientSecret}
	}
	if _, err := write("apps/"+name, app); err != nil {
		return err
	}
	if _, err := write("creds/"+name, map[string]interface{}{"type": "oauth2", "service": name, "app": name}); err != nil {
		return err
	}
	if err := connect(ctx, write, name, false); err != nil {
		return err
	}

	token, err := agentToken(ctx, org, name)
	if err != nil {
		return err
	}
	endpoint := env("CONFORMANCE_PORTAL") + "/mcp/" + org
	err = callTestTool(ctx, endpoint, token, name+".test-tool")
	m := needsScope.FindStringSubmatch(fmt.Sprint(err))
	if m == nil {
		return err
	}
	// The server asked for a scope the grant lacks (step-up): the agent is
	// told a person must reconnect the credential with it, and the person
	// does, widening the app's scopes and connecting again.
	if _, err := write("apps/"+name, map[string]interface{}{"service": name, "scopes": strings.Join(strings.Fields(m[1]), ",")}); err != nil {
		return err
	}
	if err := connect(ctx, write, name, true); err != nil {
		return err
	}
	return callTestTool(ctx, endpoint, token, name+".test-tool")
}

// needsScope finds the scope in the tool error of a step-up.
var needsScope = regexp.MustCompile(`needs scope (.+), which credential`)

// connect connects credential name, approving at the authorization server
// as the person would.
func connect(ctx context.Context, write func(string, map[string]interface{}) (*api.Secret, error), name string, replace bool) error {
	var data map[string]interface{}
	if replace {
		data = map[string]interface{}{"replace": true}
	}
	started, err := write("creds/"+name+"/connect", data)
	if err != nil {
		return err
	}
	authURL, _ := started.Data["auth_url"].(string)
	back, err := approve(ctx, authURL)
	if err != nil {
		return err
	}
	_, err = write("creds/"+name+"/callback", map[string]interface{}{
		"code": back.Get("code"), "state": back.Get("state"), "iss": back.Get("iss"),
	})
	return err
}

var notName = regexp.MustCompile(`[^a-z0-9]+`)

// credName is the service, app, credential and agent name of a scenario:
// scenarios run in parallel against one org.
func credName(scenario string) string {
	n := strings.Trim(notName.ReplaceAllString(strings.ToLower(strings.TrimPrefix(scenario, "auth/")), "-"), "-")
	if n == "" {
		n = "scenario"
	}
	return "c-" + n
}

func vaultClient(addr, token string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(token)
	return c, nil
}

// approve visits the authorization URL as the person's browser would; the
// suite's authorization server redirects back at once, and the redirect's
// query is what the callback takes.
func approve(ctx context.Context, authURL string) (url.Values, error) {
	if authURL == "" {
		return nil, errors.New("connect gave no auth_url")
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := noFollow.Do(req)
	if err != nil {
		return nil, fmt.Errorf("authorization endpoint: %w", err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		return nil, fmt.Errorf("the authorization endpoint did not redirect back (HTTP %d)", resp.StatusCode)
	}
	return loc.Query(), nil
}

// agentToken creates an agent allowed the credential and logs it in.
func agentToken(ctx context.Context, org, name string) (string, error) {
	manager, err := vaultClient(os.Getenv("CONFORMANCE_VAULT_ADDR"), os.Getenv("CONFORMANCE_AGENTS_TOKEN"))
	if err != nil {
		return "", err
	}
	login, err := provision.CreateAgent(ctx, manager, org, provision.AgentSpec{Name: name, Creds: []string{name}})
	if err != nil {
		return "", fmt.Errorf("creating the agent: %w", err)
	}
	anon, err := vaultClient(os.Getenv("CONFORMANCE_VAULT_ADDR"), "")
	if err != nil {
		return "", err
	}
	anon.ClearToken()
	s, err := anon.Logical().WriteWithContext(ctx, "auth/approle/login", map[string]interface{}{"role_id": login.RoleID, "secret_id": login.SecretID})
	if err != nil || s == nil || s.Auth == nil {
		return "", fmt.Errorf("agent login: %v", err)
	}
	return s.Auth.ClientToken, nil
}

// bearer adds the agent's Vault token to every request of the MCP session.
type bearer string

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(req)
}

// callTestTool calls tool, the remote server's test-tool as the portal
// names it, as the agent.
func callTestTool(ctx context.Context, endpoint, token, tool string) error {
	client := mcp.NewClient(&mcp.Implementation{Name: "conformance-agent", Version: "1"}, nil)
	s, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: &http.Client{Transport: bearer(token)}}, nil)
	if err != nil {
		return fmt.Errorf("MCP session with the portal: %w", err)
	}
	defer s.Close()
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{}})
	if err != nil {
		return fmt.Errorf("%s: %w", tool, err)
	}
	if res.IsError {
		var msg []string
		for _, c := range res.Content {
			if t, ok := c.(*mcp.TextContent); ok {
				msg = append(msg, t.Text)
			}
		}
		return fmt.Errorf("%s: tool error: %s", tool, strings.Join(msg, " "))
	}
	return nil
}
