package browser

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/oauthserver"
	"github.com/clankteam/credentials/testing/remotemcp"
)

// bearer adds an agent's token to each request of an MCP client.
type bearer struct{ token string }

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(req)
}

// TestRemoteMCPConnectedInThePortal: a person connects a credential of a
// remote MCP server on its page (the authorization server reads the
// portal's client metadata document, the person consents there), an agent
// calls the server's tool through /mcp/<org>, and Disconnect revokes the
// grant at the provider; the agent is then told where a person reconnects.
func TestRemoteMCPConnectedInThePortal(t *testing.T) {
	const cred = "remote-tracker"
	ctx := context.Background()
	as, remote := remotemcp.StartForTest(t, oauthserver.Options{IssInCallback: true, CIMD: true})
	root := st.root().Logical()
	mount := contract.Mount(org)
	write := func(path string, data map[string]any) {
		t.Helper()
		if _, err := root.WriteWithContext(ctx, mount+"/"+path, data); err != nil {
			t.Fatalf("writing %s: %v", path, err)
		}
	}
	write("config", map[string]any{"redirect_url": st.portal.CallbackURL(), "client_metadata_url": st.portal.ClientMetadataURL()})
	t.Cleanup(func() { _, _ = root.Write(mount+"/config", map[string]any{"client_metadata_url": ""}) })
	write("services/"+cred, map[string]any{"types": "oauth2", "mcp_url": remote.MCPURL()})
	write("apps/"+cred+"-app", map[string]any{"service": cred, "register": true})
	write("creds/"+cred, map[string]any{"type": "oauth2", "service": cred, "app": cred + "-app"})
	t.Cleanup(func() { _, _ = root.Delete(mount + "/creds/" + cred) })

	b := newBrowser(t)
	signIn(t, b, adminUser, adminPass)
	b.navigate(st.url("/orgs/" + org + "/creds/" + cred))
	b.click("#connect")
	b.click("#continue")
	if loc := b.location(); !strings.HasPrefix(loc, as.URL()+"/authorize") {
		t.Fatalf("Connect led to %s, not the remote server's authorization server", loc)
	}
	b.click("#allow")
	if loc := b.location(); !strings.HasSuffix(loc, "/orgs/"+org+"/creds/"+cred) {
		t.Fatalf("after consent the browser is at %s", loc)
	}
	if got := b.text(".flash"); !strings.Contains(got, "Connected "+cred) {
		t.Fatalf("after connecting, the message is %q", got)
	}
	if as.DocumentsFetched() == 0 || as.Registrations() != 0 {
		t.Errorf("%d documents read, %d registrations: want the portal's document", as.DocumentsFetched(), as.Registrations())
	}

	login, err := provision.CreateAgent(ctx, st.root(), org, provision.AgentSpec{Name: "remote-agent", Creds: []string{cred}, TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deleteAgentIfAny("remote-agent") })
	s, err := st.root().Logical().WriteWithContext(ctx, "auth/approle/login", map[string]any{"role_id": login.RoleID, "secret_id": login.SecretID})
	if err != nil {
		t.Fatal(err)
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "browser-test-agent", Version: "1"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: st.url("/mcp/" + org),
		HTTPClient: &http.Client{Transport: bearer{s.Auth.ClientToken}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	tool := cred + ".create_issue"
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"title": "from the browser test"}})
	if err != nil || res.IsError {
		t.Fatalf("%s: %v %v", tool, err, res)
	}
	tokens := remote.Tokens()
	if len(tokens) != 1 {
		t.Fatalf("the remote server saw %d tokens, want the grant's one", len(tokens))
	}

	b.click("#disconnect")
	b.click("#confirm")
	if got := b.text("#facts"); !strings.Contains(got, "Disconnected") {
		t.Fatalf("after disconnecting, facts say %q", got)
	}
	if !as.IsRevoked(tokens[0]) {
		t.Error("disconnecting did not revoke the grant's token at the provider")
	}
	res, err = session.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"title": "after disconnect"}})
	if err != nil {
		t.Fatal(err)
	}
	var text string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			text += tc.Text
		}
	}
	if !res.IsError || !strings.Contains(text, st.portal.PublicURL()+"/orgs/"+org+"/creds/"+cred) {
		t.Fatalf("after disconnect the agent is told %q, want the credential's portal page", text)
	}
}
