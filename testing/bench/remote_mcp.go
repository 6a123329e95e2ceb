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
// go-sdk client session: the difference is what the broker adds. The
// floor under it (remote-floor) is Vault's check of the call, sent by the
// bench with the agent's token, then the direct call: what any design
// that has Vault decide each call after it arrives pays. The same again
// for a remote server of the stateless protocol (remote-stateless-direct,
// remote-stateless-mcp).

const (
	remoteCred          = "tracker"
	remoteStatelessCred = "tracker-stateless"
)

type remoteBench struct {
	as *oauthserver.Server
	// agentToken is the token of through, the agent's session with
	// /mcp/<org>.
	agentToken string
	through    *mcp.ClientSession
	// servers are the remote servers, by credential.
	servers map[string]*remoteServer
}

// remoteServer is one remote MCP server and a go-sdk session straight to
// it with the engine's token.
type remoteServer struct {
	server *remotemcp.Server
	direct *mcp.ClientSession
}

func (st *stack) setUpRemote(ctx context.Context) error {
	as, err := oauthserver.Start(oauthserver.Options{AutoApprove: true, IssInCallback: true})
	if err != nil {
		return err
	}
	rb := &remoteBench{as: as, servers: map[string]*remoteServer{}}
	st.remote = rb
	root := st.vault.Client().Logical()
	mount := contract.Mount(org)
	if _, err := root.WriteWithContext(ctx, mount+"/config", map[string]interface{}{"redirect_url": loopback, "broker_max_body": 64 << 20}); err != nil {
		return err
	}
	for _, cred := range []string{remoteCred, remoteStatelessCred} {
		server, err := remotemcp.Start(as)
		if err != nil {
			return err
		}
		rb.servers[cred] = &remoteServer{server: server}
		if cred == remoteStatelessCred {
			server.Stateless()
		}
		if err := st.connectRemote(ctx, cred, server); err != nil {
			return err
		}
	}
	if rb.agentToken, err = st.agentLogin(ctx, provision.AgentSpec{Name: "bench-remote", Creds: []string{remoteCred, remoteStatelessCred}, TokenTTL: time.Hour}); err != nil {
		return err
	}
	if rb.through, err = connectMCP(ctx, st.portalURL+"/mcp/"+org, rb.agentToken); err != nil {
		return fmt.Errorf("connecting to /mcp/%s: %w", org, err)
	}
	for cred, rs := range rb.servers {
		// The first call through the broker shows the remote server the
		// token the engine holds; the direct client uses it as it is.
		if err := callRemoteTool(ctx, rb.through, cred+".create_issue"); err != nil {
			return err
		}
		tokens := rs.server.Tokens()
		if len(tokens) != 1 {
			return fmt.Errorf("the remote server of %s saw %d tokens, want 1", cred, len(tokens))
		}
		if rs.direct, err = connectMCP(ctx, rs.server.MCPURL(), tokens[0]); err != nil {
			return fmt.Errorf("connecting to the remote server of %s: %w", cred, err)
		}
	}
	return nil
}

// connectRemote writes credential cred on a service naming server and
// connects it through the engine's whole flow.
func (st *stack) connectRemote(ctx context.Context, cred string, server *remotemcp.Server) error {
	root := st.vault.Client().Logical()
	mount := contract.Mount(org)
	for _, w := range []struct {
		path string
		data map[string]interface{}
	}{
		{mount + "/services/" + cred, map[string]interface{}{"types": "oauth2", "mcp_url": server.MCPURL()}},
		{mount + "/apps/" + cred + "-app", map[string]interface{}{"service": cred, "register": true}},
		{mount + "/creds/" + cred, map[string]interface{}{"type": "oauth2", "service": cred, "app": cred + "-app"}},
	} {
		if _, err := root.WriteWithContext(ctx, w.path, w.data); err != nil {
			return fmt.Errorf("writing %s: %w", w.path, err)
		}
	}
	started, err := root.WriteWithContext(ctx, mount+"/creds/"+cred+"/connect", nil)
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
	if _, err := root.WriteWithContext(ctx, mount+"/creds/"+cred+"/callback", map[string]interface{}{
		"code": q.Get("code"), "state": q.Get("state"), "iss": q.Get("iss"),
	}); err != nil {
		return fmt.Errorf("callback of %s: %w", cred, err)
	}
	return nil
}

func (rb *remoteBench) stop() {
	if rb.through != nil {
		_ = rb.through.Close()
	}
	for _, rs := range rb.servers {
		if rs.direct != nil {
			_ = rs.direct.Close()
		}
		rs.server.Close()
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
	checkBody := []byte(`{"paths":["` + contract.CallPath(org, remoteCred, contract.MethodTool, "/create_issue") + `"]}`)
	return []scenario{
		{"remote-direct", "a remote MCP server's tool, called directly with the token", func(ctx context.Context) error {
			return callRemoteTool(ctx, st.remote.servers[remoteCred].direct, "create_issue")
		}},
		{"remote-floor", "Vault's check of the tool's call, then the direct call (the floor of a call Vault decides first)", func(ctx context.Context) error {
			if err := st.checkWith(ctx, st.remote.agentToken, checkBody); err != nil {
				return err
			}
			return callRemoteTool(ctx, st.remote.servers[remoteCred].direct, "create_issue")
		}},
		{"remote-mcp", "the same tool through /mcp/<org> (tracker.create_issue)", func(ctx context.Context) error {
			return callRemoteTool(ctx, st.remote.through, remoteCred+".create_issue")
		}},
		{"remote-stateless-direct", "a stateless-protocol remote server's tool, called directly with the token", func(ctx context.Context) error {
			return callRemoteTool(ctx, st.remote.servers[remoteStatelessCred].direct, "create_issue")
		}},
		{"remote-stateless-mcp", "the same tool through /mcp/<org> (tracker-stateless.create_issue)", func(ctx context.Context) error {
			return callRemoteTool(ctx, st.remote.through, remoteStatelessCred+".create_issue")
		}},
	}
}
