package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/oauthserver"
	"github.com/clankteam/credentials/testing/remotemcp"
)

// A remote MCP server's tool, called through /mcp/<org> (remote-mcp) and
// directly with the token the engine holds (remote-direct), each by a
// go-sdk client session: the difference is what the broker adds.

const remoteCred = "tracker"

type remoteBench struct {
	as      *oauthserver.Server
	remote  *remoteMCP
	through *mcp.ClientSession
	direct  *mcp.ClientSession
}

type remoteMCP = remotemcp.Server

func (st *stack) setUpRemote(ctx context.Context) error {
	as, err := oauthserver.Start(oauthserver.Options{AutoApprove: true, IssInCallback: true})
	if err != nil {
		return err
	}
	rb := &remoteBench{as: as}
	st.remote = rb
	if rb.remote, err = remotemcp.Start(as); err != nil {
		return err
	}
	root := st.vault.Client().Logical()
	mount := contract.Mount(org)
	for _, w := range []struct {
		path string
		data map[string]interface{}
	}{
		{mount + "/config", map[string]interface{}{"redirect_url": loopback, "broker_max_body": 64 << 20}},
		{mount + "/services/tracker", map[string]interface{}{"types": "oauth2", "mcp_url": rb.remote.MCPURL()}},
		{mount + "/apps/tracker-app", map[string]interface{}{"service": "tracker", "register": true}},
		{mount + "/creds/" + remoteCred, map[string]interface{}{"type": "oauth2", "service": "tracker", "app": "tracker-app"}},
	} {
		if _, err := root.WriteWithContext(ctx, w.path, w.data); err != nil {
			return fmt.Errorf("writing %s: %w", w.path, err)
		}
	}
	started, err := root.WriteWithContext(ctx, mount+"/creds/"+remoteCred+"/connect", nil)
	if err != nil {
		return err
	}
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(started.Data["auth_url"].(string))
	if err != nil {
		return err
	}
	resp.Body.Close()
	back, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return err
	}
	q := back.Query()
	if _, err := root.WriteWithContext(ctx, mount+"/creds/"+remoteCred+"/callback", map[string]interface{}{
		"code": q.Get("code"), "state": q.Get("state"), "iss": q.Get("iss"),
	}); err != nil {
		return fmt.Errorf("callback: %w", err)
	}
	login, err := provision.CreateAgent(ctx, st.vault.Client(), org, provision.AgentSpec{Name: "bench-remote", Creds: []string{remoteCred}, TokenTTL: time.Hour})
	if err != nil {
		return err
	}
	s, err := st.vault.ClientWithToken("").Logical().WriteWithContext(ctx, "auth/approle/login", map[string]interface{}{
		"role_id": login.RoleID, "secret_id": login.SecretID,
	})
	if err != nil {
		return err
	}
	if rb.through, err = connectMCP(ctx, st.portalURL+"/mcp/"+org, s.Auth.ClientToken); err != nil {
		return fmt.Errorf("connecting to /mcp/%s: %w", org, err)
	}
	// The first call through the broker shows the remote server the token
	// the engine holds; the direct client uses it as it is.
	if err := callRemoteTool(ctx, rb.through, remoteCred+".create_issue"); err != nil {
		return err
	}
	tokens := rb.remote.Tokens()
	if len(tokens) != 1 {
		return fmt.Errorf("the remote server saw %d tokens, want 1", len(tokens))
	}
	if rb.direct, err = connectMCP(ctx, rb.remote.MCPURL(), tokens[0]); err != nil {
		return fmt.Errorf("connecting to the remote server: %w", err)
	}
	return nil
}

func (rb *remoteBench) stop() {
	for _, s := range []*mcp.ClientSession{rb.through, rb.direct} {
		if s != nil {
			_ = s.Close()
		}
	}
	if rb.remote != nil {
		rb.remote.Close()
	}
	rb.as.Close()
}

// bearer adds a token to each request of an MCP client.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b *bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(req)
}

func connectMCP(ctx context.Context, endpoint, token string) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
	transport := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute}
	return client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint,
		HTTPClient: &http.Client{Transport: &bearer{token: token, next: transport}}, DisableStandaloneSSE: true}, nil)
}

func callRemoteTool(ctx context.Context, s *mcp.ClientSession, name string) error {
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{"title": "bench"}})
	if err != nil {
		return err
	}
	if res.IsError {
		return errors.New("the tool call answered an error")
	}
	return nil
}

func (st *stack) remoteScenarios() []scenario {
	if st.remote == nil {
		return nil
	}
	return []scenario{
		{"remote-direct", "a remote MCP server's tool, called directly with the token", func(ctx context.Context) error {
			return callRemoteTool(ctx, st.remote.direct, "create_issue")
		}},
		{"remote-mcp", "the same tool through /mcp/<org> (tracker.create_issue)", func(ctx context.Context) error {
			return callRemoteTool(ctx, st.remote.through, remoteCred+".create_issue")
		}},
	}
}
