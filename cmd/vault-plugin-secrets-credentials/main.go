// Command vault-plugin-secrets-credentials is the Vault secrets engine that
// keeps an organization's credentials for its AI agents.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/plugin"

	"github.com/clankteam/credentials/cmd/internal/hardening"
	credentials "github.com/clankteam/credentials/plugin"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		hclog.New(&hclog.LoggerOptions{}).Error("plugin shutting down", "error", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	hardening.DisableCoreDumps()

	apiClientMeta := &api.PluginAPIClientMeta{}
	flags := apiClientMeta.FlagSet()
	showVersion := flags.Bool("version", false, "print the plugin's version and exit")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Println(credentials.Version)
		return nil
	}
	logger := hclog.New(&hclog.LoggerOptions{})
	hardening.ExitWhenOrphaned(time.Second, func(format string, args ...any) { logger.Warn(fmt.Sprintf(format, args...)) })

	return plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: credentials.Factory,
		// Vault 1.12+ uses automatic mTLS for plugins; the provider is only
		// consulted by older servers that pass the TLS flags above.
		TLSProviderFunc: api.VaultPluginTLSProvider(apiClientMeta.GetTLSConfig()),
	})
}
