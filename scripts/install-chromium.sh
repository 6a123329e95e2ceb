#!/bin/sh
# Installs Debian's chromium for the browser tests when it is missing
# (about 20 s and 440 MB). The tests use $CHROMIUM, else /usr/bin/chromium.
set -eu

if [ "${SKIP_BROWSER_TESTS:-}" = "1" ]; then
	echo "install-chromium: SKIP_BROWSER_TESTS=1, not installing chromium (browser tests will be SKIPPED)"
	exit 0
fi
bin="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$bin" ]; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-chromium: $bin is missing and there is no apt-get; install Chromium and set CHROMIUM to its path" >&2
	exit 1
fi
sudo=""
if [ "$(id -u)" != "0" ]; then
	command -v sudo >/dev/null 2>&1 || { echo "install-chromium: need root (or sudo) to apt-get install chromium" >&2; exit 1; }
	sudo="sudo"
fi
echo "install-chromium: installing Debian's chromium for the browser tests"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
test -x "$bin" || { echo "install-chromium: chromium installed but $bin is not there" >&2; exit 1; }
echo "install-chromium: $("$bin" --version 2>/dev/null || echo chromium)"
