// Package devstack runs the whole product on one machine for `make run`: a
// Vault dev server with the engine, a demo org with a person who can sign in,
// sample credentials, a local OAuth provider and a local API, and the portal.
// It works offline.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/harness"
	"github.com/clankteam/credentials/testing/tlsca"
)

// Options configure the stack; zero values give the README's defaults.
type Options struct {
	// PluginBinary is the engine to register (default: harness's default).
	PluginBinary string
	// PortalAddr defaults to 127.0.0.1:8080, or a free port if that is taken.
	PortalAddr string
	// VaultAddr defaults to 127.0.0.1:8200, or a free port if that is taken.
	VaultAddr string
	// ProxyAddr is the portal's forward proxy, default 127.0.0.1:8081 or a
	// free port.
	ProxyAddr string
	// Org, Username and Password name the demo org and its person.
	Org, Username, Password string
}

// Stack is a running development stack.
type Stack struct {
	PortalURL string
	VaultAddr string
	// VaultToken is the dev server's root token (empty for an external Vault).
	VaultToken string
	Org        string
	Username   string
	Password   string
	// MCPURL is the demo org's MCP server; Agent is the login of the demo
	// agent (DemoAgent), which may use demo-api, demo-oauth and mailer.
	MCPURL string
	Agent  *provision.AgentLogin
	// ProxyURL is the portal's forward proxy (HTTPS_PROXY); ProxyCA the
	// demo org's proxy CA, which programs using it trust.
	ProxyURL, ProxyCA string
	proxyDir          string
	// DemoAPIURL is the demo API's base URL (credential demo-api).
	DemoAPIURL string

	vault  *harness.Vault
	portal *portal.Server
	demo   *demo
	served chan error
}

// DemoAgent is the demo org's agent.
const DemoAgent = "demo-agent"

// Describe prints what make run shows: where everything is and the
// commands to try first (the README's "first ten minutes" follow it).
func (st *Stack) Describe(w io.Writer) {
	fmt.Fprintf(w, `
  Portal:  %s
  Sign in: %s / %s   (org %q)
  Vault:   %s
`, st.PortalURL, st.Username, st.Password, st.Org, st.VaultAddr)
	if st.VaultToken != "" {
		fmt.Fprintf(w, "  CLI:     export VAULT_ADDR=%s VAULT_TOKEN=%s\n", st.VaultAddr, st.VaultToken)
		fmt.Fprintf(w, "           vault list -detailed orgs/%s/creds\n", st.Org)
		fmt.Fprintf(w, "  Broker:  vault write -f -field=body_text orgs/%s/proxy/demo-api/GET/v1/balance\n", st.Org)
		fmt.Fprintf(w, "           curl -H \"X-Vault-Token: $VAULT_TOKEN\" %s/broker/%s/demo-api/v1/balance\n", st.PortalURL, st.Org)
	}
	fmt.Fprintf(w, `
  Agent:   %[1]s may use demo-api, demo-oauth (connect it first) and mailer.
           export AGENT_ROLE_ID=%[2]s AGENT_SECRET_ID=%[3]s
           export AGENT_TOKEN=$(VAULT_ADDR=%[4]s bin/portal agent token -org %[5]s %[1]s)
           curl -H "Authorization: Bearer $AGENT_TOKEN" %[6]s/broker/%[5]s/demo-api/v1/balance
  MCP:     %[7]s  (Authorization: Bearer $AGENT_TOKEN)
  Proxy:   curl --proxy http://%[5]s:$AGENT_TOKEN@%[8]s %[9]s/v1/balance
           (HTTPS_PROXY for programs; for https:// they trust %[10]s)
`, DemoAgent, st.Agent.RoleID, st.Agent.SecretID, st.VaultAddr, st.Org, st.PortalURL, st.MCPURL,
		strings.TrimPrefix(st.ProxyURL, "http://"), st.DemoAPIURL, st.ProxyCA)
}

// Start brings the stack up. With VAULT_ADDR and VAULT_TOKEN set it uses that
// Vault (the engine must already be registered there as "credentials")
// instead of starting a dev server.
func Start(ctx context.Context, opts Options, logOut io.Writer) (*Stack, error) {
	if opts.Org == "" {
		opts.Org = "acme"
	}
	if opts.Username == "" {
		opts.Username, opts.Password = "demo", "demo-password"
	}
	st := &Stack{Org: opts.Org, Username: opts.Username, Password: opts.Password}

	client, err := st.startVault(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := st.provision(ctx, client); err != nil {
		st.Stop()
		return nil, err
	}

	edgeKey, err := st.edgeKey()
	if err != nil {
		st.Stop()
		return nil, err
	}
	if st.proxyDir, err = os.MkdirTemp("", "credentials-proxy-ca-"); err == nil {
		st.ProxyCA, err = portal.CreateProxyCA(st.proxyDir, st.Org, false)
	}
	if err != nil {
		st.Stop()
		return nil, fmt.Errorf("the demo org's proxy CA: %w", err)
	}
	srv, err := portal.NewServer(portal.Config{
		Addr:       addrOrFree(opts.PortalAddr, "127.0.0.1:8080"),
		VaultAddr:  st.VaultAddr,
		EdgeKey:    edgeKey,
		ProxyAddr:  addrOrFree(opts.ProxyAddr, "127.0.0.1:8081"),
		ProxyCADir: st.proxyDir,
		Logger:     slog.New(slog.NewTextHandler(logOut, nil)),
	})
	if err != nil {
		st.Stop()
		return nil, err
	}
	if err := srv.Listen(); err != nil {
		st.Stop()
		return nil, err
	}
	st.portal = srv
	st.PortalURL = srv.URL()
	st.ProxyURL = srv.ProxyURL()
	var ca *tlsca.CA
	if st.vault != nil {
		ca = st.vault.CA
	}
	if st.demo, err = startDemo(ctx, client, st.Org, srv.CallbackURL(), ca, logOut); err != nil {
		st.Stop()
		return nil, err
	}
	st.MCPURL = st.PortalURL + "/mcp/" + st.Org
	st.DemoAPIURL = st.demo.api.URL
	if st.Agent, err = provision.CreateAgent(ctx, client, st.Org, provision.AgentSpec{Name: DemoAgent, Creds: []string{"demo-api", "demo-oauth", "mailer"}}); err != nil {
		st.Stop()
		return nil, fmt.Errorf("creating the demo agent: %w", err)
	}
	st.served = make(chan error, 1)
	go func() { st.served <- srv.Serve() }()
	return st, nil
}

func (st *Stack) startVault(ctx context.Context, opts Options) (*api.Client, error) {
	if addr, token := os.Getenv("VAULT_ADDR"), os.Getenv("VAULT_TOKEN"); addr != "" && token != "" {
		c, err := api.NewClient(api.DefaultConfig())
		if err != nil {
			return nil, err
		}
		registered, err := pluginRegistered(ctx, c)
		if err != nil {
			return nil, err
		}
		if !registered {
			return nil, fmt.Errorf("the Vault at %s has no %q secrets plugin registered: "+
				"copy bin/%s into its plugin_directory and register it by SHA-256 (see README)",
				addr, provision.PluginName, harness.PluginBinaryName)
		}
		st.VaultAddr = addr
		return c, nil
	}
	v, err := harness.Start(ctx, harness.Options{
		PluginBinary: opts.PluginBinary,
		ListenAddr:   addrOrFree(opts.VaultAddr, "127.0.0.1:8200"),
	})
	if err != nil {
		return nil, err
	}
	st.vault = v
	st.VaultAddr = v.Addr
	st.VaultToken = v.RootToken
	return v.Client(), nil
}

// edgeKey is the broker edge's key: the one the harness registered the
// engine with, or, on an existing Vault, PORTAL_EDGE_KEY from the
// environment (whose public half the operator registered the engine with).
func (st *Stack) edgeKey() (*egress.EdgePrivateKey, error) {
	if st.vault != nil {
		return st.vault.PortalEdgeKey(), nil
	}
	raw := os.Getenv(egress.EdgeKeyEnv)
	if raw == "" {
		return nil, fmt.Errorf("on an existing Vault, set %s to the edge key whose public half the engine was registered with (%s): portal edge-key prints a pair", egress.EdgeKeyEnv, egress.EdgeKeysEnv)
	}
	return egress.ParseEdgePrivateKey(raw)
}

// pluginRegistered says whether the engine is in Vault's catalog. The
// catalog is listed rather than read: a plugin registered without a version
// is recorded under the version it reports, so a read without one finds
// nothing.
func pluginRegistered(ctx context.Context, c *api.Client) (bool, error) {
	list, err := c.Sys().ListPluginsWithContext(ctx, &api.ListPluginsInput{Type: api.PluginTypeSecrets})
	if err != nil {
		return false, fmt.Errorf("listing Vault's plugin catalog: %w", err)
	}
	for _, d := range list.Details {
		if d.Name == provision.PluginName {
			return true, nil
		}
	}
	for _, name := range list.PluginsByType[api.PluginTypeSecrets] {
		if name == provision.PluginName {
			return true, nil
		}
	}
	return false, nil
}

func (st *Stack) provision(ctx context.Context, c *api.Client) error {
	if err := provision.CreateOrg(ctx, c, st.Org); err != nil {
		return err
	}
	// The demo person may also manage agents, so that every page works.
	for _, role := range []provision.Role{provision.RoleAdmin, provision.RoleAgents} {
		if err := provision.CreatePerson(ctx, c, st.Org, st.Username, st.Password, role); err != nil {
			return err
		}
	}
	return nil
}

// Wait blocks until the context ends or the portal fails.
func (st *Stack) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-st.served:
		return err
	}
}

// Stop ends everything Start began, in reverse order.
func (st *Stack) Stop() error {
	var errs []error
	if st.portal != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, st.portal.Shutdown(ctx))
		cancel()
	}
	if st.demo != nil {
		st.demo.close()
	}
	if st.vault != nil {
		errs = append(errs, st.vault.Stop())
	}
	if st.proxyDir != "" {
		errs = append(errs, os.RemoveAll(st.proxyDir))
	}
	return errors.Join(errs...)
}

// addrOrFree returns want if set (a named free port for host:0), else
// preferred when it is free, else a
// free loopback port, chosen here: a ":0" would reach Vault as a port it
// binds, while the stack would keep waiting on ":0".
func addrOrFree(want, preferred string) string {
	if want != "" && !strings.HasSuffix(want, ":0") {
		return want
	}
	if want != "" {
		// Any free port, named: Vault would bind ":0" while the stack
		// waited on it.
		preferred = want
	}
	l, err := net.Listen("tcp", preferred)
	if err != nil {
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return preferred
		}
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
