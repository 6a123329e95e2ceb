package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/clankteam/credentials/testing/devstack"
)

// TestDevstackOnAnExistingVault runs `make run`'s stack against the test's
// Vault, as VAULT_ADDR and VAULT_TOKEN make it do: the portal answers, the
// demo org holds a credential of every type, and the broker reaches the
// local demo API offline.
func TestDevstackOnAnExistingVault(t *testing.T) {
	t.Setenv("VAULT_ADDR", vault.Addr)
	t.Setenv("VAULT_TOKEN", vault.RootToken)
	// The operator registered the engine with this key's public half.
	t.Setenv("PORTAL_EDGE_KEY", vault.EdgeKey)
	ctx := context.Background()
	st, err := devstack.Start(ctx, devstack.Options{Org: "devstack", PortalAddr: "127.0.0.1:0", ProxyAddr: "127.0.0.1:0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Stop(); err != nil {
			t.Errorf("stopping the stack: %v", err)
		}
	})

	resp, err := http.Get(st.PortalURL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("portal /healthz = %d", resp.StatusCode)
	}

	c := vault.Client()
	list, err := c.Logical().ListWithContext(ctx, "orgs/devstack/creds")
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]bool{}
	for _, info := range list.Data["key_info"].(map[string]interface{}) {
		types[info.(map[string]interface{})["type"].(string)] = true
	}
	for _, typ := range []string{"oauth2", "api_key", "password", "file"} {
		if !types[typ] {
			t.Errorf("the demo org has no %s credential", typ)
		}
	}

	out, err := c.Logical().WriteWithContext(ctx, "orgs/devstack/proxy/demo-api", map[string]interface{}{
		"method": "GET", "path": "/v1/balance",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(out.Data["status"]); got != "200" {
		t.Fatalf("brokered call to the demo API answered %s", got)
	}

	// The demo agent uses its credentials through MCP, as make run prints.
	token := agentLogin(t, st.Agent)
	s, err := mcpSession(t, st.MCPURL, &transcript{token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if names := toolNamesOf(t, s); fmt.Sprint(names) != "[demo-api demo-oauth list_credentials send_email]" {
		t.Fatalf("the demo agent's tools: %v", names)
	}
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "demo-api", Arguments: map[string]any{"path": "/v1/balance"}})
	if err != nil || res.IsError || !strings.Contains(toolText(t, res), `"status":200`) {
		t.Fatalf("demo-api through MCP: %v %s", err, toolText(t, res))
	}

	// And through the forward proxy, as make run prints.
	proxy, _ := url.Parse(st.ProxyURL)
	proxy.User = url.UserPassword(st.Org, token)
	viaProxy := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
	resp, err = viaProxy.Get(st.DemoAPIURL + "/v1/balance")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the demo API through the proxy answered %d", resp.StatusCode)
	}
	if _, err := os.Stat(st.ProxyCA); err != nil {
		t.Errorf("the demo org's proxy CA: %v", err)
	}
}
