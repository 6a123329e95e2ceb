// Package integration holds the tests that need the real Vault: the engine
// is registered in a dev server started by testing/harness and driven through
// Vault's HTTP API with vault/api, exactly as a user would.
package integration

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/clankteam/credentials/testing/harness"
)

// vault is shared by the package's tests; each test uses orgs of its own so
// that tests do not see each other's data.
var vault *harness.Vault

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	v, err := harness.Start(context.Background(), harness.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting vault:", err)
		return 1
	}
	vault = v
	code := m.Run()
	if err := v.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping vault:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
