#!/bin/sh
# Installs the browser tests' npm assets (axe-core) into
# testing/browser/node_modules (gitignored), from the committed lock file.
# Skipped when they are already there and the lock file has not changed.
set -eu
cd "$(dirname "$0")/../testing/browser"

if [ "${SKIP_BROWSER_TESTS:-}" = "1" ]; then
	echo "install-npm-assets: SKIP_BROWSER_TESTS=1, not installing axe-core (browser tests will be SKIPPED)"
	exit 0
fi
stamp=node_modules/.installed-lock
if [ -f node_modules/axe-core/axe.min.js ] && [ -f "$stamp" ] && cmp -s package-lock.json "$stamp"; then
	exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
	if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
		echo "install-npm-assets: installing Debian's npm"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
	else
		echo "install-npm-assets: npm is needed (apt-get install npm)" >&2
		exit 1
	fi
fi
npm ci --no-audit --no-fund --loglevel=error
cp package-lock.json "$stamp"
