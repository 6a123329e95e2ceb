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

	st.Describe(os.Stdout)
	fmt.Println("\n  Ctrl-C stops everything.")

	err = st.Wait(ctx)
	fmt.Println("stopping...")
	return err
}
