#!/bin/sh
# build-vault.sh CACHE OUT builds HashiCorp Vault from its Go module
# (testing/vault) into OUT through CACHE, a directory outside the checkout
# (the Makefile's tool cache): the binary is kept there, named by a hash of
# the module's files and the Go version, so a fresh clone (as CI makes)
# links it in seconds instead of relinking a 140 MB binary.
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="$1"
out="$2"
go="${GO:-go}"
# Vault's own build tag for a server with only its core plugins (kv, pki,
# ssh, transit; approle, cert, jwt/oidc, userpass) and the raft and inmem
# storage: the server the tests need, without the cloud and database
# plugins none of them mounts, whose modules were a quarter of a cold
# build's downloads and compile.
tags=minimal

key="$(cat "$root/testing/vault/go.mod" "$root/testing/vault/go.sum" "$root/testing/vault/main.go" |
	{ cat; "$go" version; echo "tags=$tags"; } | sha256sum | cut -c1-16)"
cached="$cache/vault-$key"

if [ ! -x "$cached" ]; then
	mkdir -p "$cache"
	echo "build-vault: building Vault from testing/vault (several minutes the first time on 2 cores)"
	(cd "$root/testing/vault" && "$go" build -tags "$tags" -ldflags "-s -w" -o "$cached.tmp" .)
	mv "$cached.tmp" "$cached"
fi
mkdir -p "$(dirname "$out")"
ln -f "$cached" "$out" 2>/dev/null || cp "$cached" "$out"
