// Command vault is HashiCorp Vault, built from its own Go module.
//
// Release binaries cannot be downloaded where this project is built and
// tested, so the real server is compiled from source: this main is the same
// as Vault's own main.go. It lives in a module of its own so that Vault's
// large dependency graph stays out of the product's go.mod.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
