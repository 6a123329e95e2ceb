# The two commands a newcomer needs are `make run` and `make test`; every
# other target is something they call. Everything they need is built or
# installed here and cached, so a second run is fast.

GO      ?= go
BIN     := $(CURDIR)/bin
PLUGIN  := vault-plugin-secrets-credentials
VERSION ?= v0.1.0
LDFLAGS := -s -w -X github.com/clankteam/credentials/plugin.Version=$(VERSION)

# The race-enabled engine the integration tests register in Vault, so races
# inside the plugin process fail the tests too.
RACE_PLUGIN := $(BIN)/race/$(PLUGIN)
GOSRC := internal plugin portal cmd testing

# -trimpath keeps the checkout's directory out of Go's build cache keys, so a
# fresh clone (CI's, or a second worktree) reuses the packages and test
# binaries an earlier checkout compiled instead of recompiling them all.
TRIM := -trimpath

# Tools built once per machine are kept here, outside the checkout, and
# linked into bin/, so a fresh clone does not build or relink them.
TOOLCACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/clankteam-credentials

# staticcheck, pinned: make lint installs this version into the tool cache once.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(BIN)/staticcheck
STATICCHECK_CACHED := $(TOOLCACHE)/staticcheck-$(STATICCHECK_VERSION)/staticcheck

.PHONY: test-faults all run test vault plugin portal fmt lint vet unit bench bench-peer clean chromium npm-assets logos

all: vault plugin portal

## run: Vault dev server + engine + portal + demo org, until Ctrl-C
run: vault plugin portal
	$(GO) build -o $(BIN)/devstack ./cmd/devstack
	$(BIN)/devstack -plugin $(BIN)/$(PLUGIN)

## test: vet, unit and integration tests against the real Vault, and the
## browser tests in headless Chromium, with -race
test: vault lint chromium npm-assets
	$(GO) build $(TRIM) -race -o $(RACE_PLUGIN) ./cmd/$(PLUGIN)
	VAULT_BIN=$(BIN)/vault CREDENTIALS_PLUGIN_BIN=$(RACE_PLUGIN) \
		$(GO) test $(TRIM) -race -count=1 -timeout 20m ./...
	@if [ "$$SKIP_BROWSER_TESTS" = "1" ]; then \
		echo "!!! SKIP_BROWSER_TESTS=1: the browser tests (testing/browser) were SKIPPED: nothing checked the portal in a browser, nor ran the MCP conformance suite"; fi

## test-faults: the fault suite (testing/faults) on a three-node Raft
## cluster: leader killed and frozen, plugin killed, cluster restarted,
## plugin upgraded, while agents call the broker; under 2 minutes
test-faults: vault
	$(GO) build $(TRIM) -race -o $(RACE_PLUGIN) ./cmd/$(PLUGIN)
	VAULT_BIN=$(BIN)/vault CREDENTIALS_PLUGIN_BIN=$(RACE_PLUGIN) CREDENTIALS_FAULTS=1 \
		$(GO) test $(TRIM) -race -count=1 -timeout 15m -v ./testing/faults

## vault: the real HashiCorp Vault, built from its Go module (testing/vault).
## Rebuilt only when that module or its build script changes (about 9 minutes cold);
## the binary is cached outside the checkout, so a fresh clone links it.
vault: $(BIN)/vault

$(BIN)/vault: testing/vault/go.mod testing/vault/go.sum testing/vault/main.go scripts/build-vault.sh
	GO=$(GO) ./scripts/build-vault.sh $(TOOLCACHE) $(BIN)/vault

## chromium: Debian's chromium for the browser tests, installed when missing
chromium:
	@./scripts/install-chromium.sh

## npm-assets: axe-core for the browser tests, the MCP conformance suite and its Node.js
npm-assets:
	@./scripts/install-npm-assets.sh

## logos: re-extract the portal's brand logos from simple-icons (committed)
logos:
	./scripts/extract-logos.sh

## bench: the broker benchmark (testing/bench), numbers for the README
bench:
	$(GO) run ./testing/bench

## bench-peer: the same with Agent Vault beside it in one run; needs
## AGENT_VAULT_SRC (a checkout of its repository) and root (unshare -m)
bench-peer:
	./scripts/bench-peer.sh

plugin:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/$(PLUGIN) ./cmd/$(PLUGIN)

portal:
	$(GO) build -trimpath -o $(BIN)/portal ./cmd/portal

vet:
	@test -z "$$(gofmt -l $(GOSRC))" || { gofmt -l $(GOSRC); echo "run make fmt"; exit 1; }
	$(GO) vet $(TRIM) ./...

fmt:
	gofmt -w $(GOSRC)

## lint: gofmt, go vet and staticcheck (built from its Go module, cached in bin/)
lint: vet $(STATICCHECK)
	$(STATICCHECK) ./...

$(STATICCHECK):
	test -x $(STATICCHECK_CACHED) || \
		GOBIN=$(dir $(STATICCHECK_CACHED)) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mkdir -p $(BIN)
	ln -f $(STATICCHECK_CACHED) $@ 2>/dev/null || cp $(STATICCHECK_CACHED) $@

unit:
	$(GO) test $(TRIM) -race -short ./plugin/... ./portal/...

clean:
	rm -rf $(BIN)
