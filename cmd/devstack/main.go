// Command devstack is `make run`: Vault with the engine, a demo org and the
// portal, until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/clankteam/credentials/testing/devstack"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

func run() error {
	plugin := flag.String("plugin", "", "engine binary to register (default: build it)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	st, err := devstack.Start(ctx, devstack.Options{PluginBinary: *plugin}, os.Stderr)
	if err != nil {
		return err
	}
	defer st.Stop()

	fmt.Printf(`
  Portal:  %s
  Sign in: %s / %s   (org %q)
  Vault:   %s
`, st.PortalURL, st.Username, st.Password, st.Org, st.VaultAddr)
	if st.VaultToken != "" {
		fmt.Printf("  CLI:     export VAULT_ADDR=%s VAULT_TOKEN=%s\n", st.VaultAddr, st.VaultToken)
		fmt.Printf("           vault list -detailed orgs/%s/creds\n", st.Org)
		fmt.Printf("  Broker:  vault write -f -field=body_text orgs/%s/proxy/demo-api/GET/v1/balance\n", st.Org)
		fmt.Printf("           curl -H \"X-Vault-Token: $VAULT_TOKEN\" %s/broker/%s/demo-api/v1/balance\n", st.PortalURL, st.Org)
	}
	fmt.Printf(`
  Agent:   %[1]s may use demo-api, demo-oauth (connect it first) and mailer.
           export AGENT_ROLE_ID=%[2]s AGENT_SECRET_ID=%[3]s
           export AGENT_TOKEN=$(VAULT_ADDR=%[4]s bin/portal agent token -org %[5]s %[1]s)
           curl -H "Authorization: Bearer $AGENT_TOKEN" %[6]s/broker/%[5]s/demo-api/v1/balance
  MCP:     %[7]s  (Authorization: Bearer $AGENT_TOKEN)
`, devstack.DemoAgent, st.Agent.RoleID, st.Agent.SecretID, st.VaultAddr, st.Org, st.PortalURL, st.MCPURL)
	fmt.Println("\n  Ctrl-C stops everything.")

	err = st.Wait(ctx)
	fmt.Println("stopping...")
	return err
}
