#!/bin/sh
# The broker benchmark with Infisical Agent Vault, an open-source broker for
# agents, measured beside ours in one run (make bench-peer).
#
# AGENT_VAULT_SRC names a checkout of its public repository (measured at
# commit 1074383); nothing is downloaded here. Agent Vault refuses IP
# addresses and localhost as service hosts, so it runs in a private mount
# namespace (unshare -m, needs root) whose /etc/hosts maps bench.test to
# 127.0.0.1; its default rate limit is turned off for the benchmark. Every
# process started here is stopped on exit.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
src=${AGENT_VAULT_SRC:?set AGENT_VAULT_SRC to a checkout of the Agent Vault repository}
bin=$root/bin/agent-vault
upstream_port=${BENCH_UPSTREAM_PORT:-18411}
upstream_tls_port=${BENCH_UPSTREAM_TLS_PORT:-18412}
api_port=${AGENT_VAULT_PORT:-14321}
proxy_port=${AGENT_VAULT_PROXY_PORT:-14322}
key=sk_test_BENCHbench0123456789abcd   # the bench's upstream key (testing/bench)

if [ ! -x "$bin" ] || [ -n "$(find "$src" -name '*.go' -newer "$bin" -print -quit)" ]; then
	echo "bench-peer: building Agent Vault from $src"
	(cd "$src" && go build -o "$bin" .)
fi

work=$(mktemp -d)
server_pid=""
cleanup() {
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The HTTPS upstream's CA, made before the peer starts so that the peer
# trusts it (SSL_CERT_FILE); the bench serves with it.
(cd "$root" && go run ./testing/bench -write-upstream-ca "$work/upstream-ca")

cp /etc/hosts "$work/hosts"
echo "127.0.0.1 bench.test" >>"$work/hosts"
go_home=$HOME
# Agent Vault's CLI keeps its session under HOME; ours stays as it was.
export HOME="$work" AGENT_VAULT_TELEMETRY=false
password=bench-password-0123456789
addr="http://127.0.0.1:$api_port"

AGENT_VAULT_MASTER_PASSWORD=$password AGENT_VAULT_RATELIMIT_PROFILE=off \
AGENT_VAULT_ALLOW_PRIVATE_RANGES=true AGENT_VAULT_ADDR="$addr" SSL_CERT_FILE="$work/upstream-ca/bundle.pem" \
	unshare -m sh -c "mount --bind '$work/hosts' /etc/hosts && exec '$bin' server --host 127.0.0.1 --port $api_port --mitm-port $proxy_port" \
	>"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 100); do
	if curl -fsS "$addr/health" >/dev/null 2>&1; then break; fi
	sleep 0.2
done
curl -fsS "$addr/health" >/dev/null || { cat "$work/server.log"; exit 1; }

echo "$password" | "$bin" auth register --address "$addr" --email bench@example.com --password-stdin >/dev/null
echo "$password" | "$bin" auth login --address "$addr" --email bench@example.com --password-stdin >/dev/null
"$bin" vault credential set "BENCH_KEY=$key" >/dev/null
"$bin" vault service add --name bench --host "bench.test:$upstream_port" --auth-type bearer --token-key BENCH_KEY >/dev/null
"$bin" vault service add --name bench-tls --host "bench.test:$upstream_tls_port" --auth-type bearer --token-key BENCH_KEY >/dev/null
curl -fsS "$addr/v1/mitm/ca.pem" >"$work/peer-ca.pem"
token=$("$bin" agent create bench --vault default:proxy --token-only)

cd "$root"
HOME=$go_home go run ./testing/bench -peer-pid "$server_pid" -upstream-addr "127.0.0.1:$upstream_port" \
	-upstream-tls-addr "127.0.0.1:$upstream_tls_port" -upstream-ca "$work/upstream-ca" \
	-peer-proxy "http://127.0.0.1:$proxy_port" -peer-token "$token" -peer-host "bench.test:$upstream_port" \
	-peer-tls-host "bench.test:$upstream_tls_port" -peer-ca "$work/peer-ca.pem" "$@"
