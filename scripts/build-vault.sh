#!/bin/sh
# Builds HashiCorp Vault from its Go module (testing/vault) into the path
# given, through a cache outside the checkout: the binary is kept under the
# user's cache directory, named by a hash of the module's files and the Go
# version, so a fresh clone (as CI makes) links it in seconds instead of
# relinking a 360 MB binary.
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$1"
go="${GO:-go}"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/clankteam-credentials"
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
