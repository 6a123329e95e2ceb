#!/bin/sh
# Installs the tests' npm assets, each from its committed lock file, into a
# gitignored node_modules:
#   testing/browser      axe-core, the browser tests' accessibility checks
#   testing/conformance  the MCP conformance suite and the Node.js 22 it needs
#                        (Debian's Node.js is older), as the npm registry's
#                        node-linux-<arch> package
# Each is skipped when it is already there and its lock file has not changed.
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"

if [ "${SKIP_BROWSER_TESTS:-}" = "1" ]; then
	echo "install-npm-assets: SKIP_BROWSER_TESTS=1, not installing axe-core or the MCP conformance suite (those tests will be SKIPPED)"
	exit 0
fi

need_npm() {
	command -v npm >/dev/null 2>&1 && return 0
	if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
		echo "install-npm-assets: installing Debian's npm"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
	else
		echo "install-npm-assets: npm is needed (apt-get install npm)" >&2
		exit 1
	fi
}

# install DIR MARKER: npm ci in DIR unless MARKER exists and the lock file is
# the one last installed.
install() {
	dir="$root/$1"
	stamp="$dir/node_modules/.installed-lock"
	if [ -e "$dir/$2" ] && [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
		return 0
	fi
	need_npm
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
	cp "$dir/package-lock.json" "$stamp"
}

install testing/browser node_modules/axe-core/axe.min.js
install testing/conformance node_modules/@modelcontextprotocol/conformance/dist/index.js
