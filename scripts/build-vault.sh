#!/bin/sh
# build-vault.sh CACHE OUT builds HashiCorp Vault from its Go module
# (testing/vault) into OUT through CACHE, a directory outside the checkout
# (the Makefile's tool cache): the binary is kept there, named by a hash of
# the module's files and the Go version, so a fresh clone (as CI makes)
# links it in seconds instead of relinking a 360 MB binary.
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="$1"
out="$2"
go="${GO:-go}"

key="$(cat "$root/testing/vault/go.mod" "$root/testing/vault/go.sum" "$root/testing/vault/main.go" |
	{ cat; "$go" version; } | sha256sum | cut -c1-16)"
cached="$cache/vault-$key"

if [ ! -x "$cached" ]; then
	mkdir -p "$cache"
	echo "build-vault: building Vault from testing/vault (about 10 minutes the first time on 2 cores)"
	(cd "$root/testing/vault" && "$go" build -ldflags "-s -w" -o "$cached.tmp" .)
	mv "$cached.tmp" "$cached"
fi
mkdir -p "$(dirname "$out")"
ln -f "$cached" "$out" 2>/dev/null || cp "$cached" "$out"
