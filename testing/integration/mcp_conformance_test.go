package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
)

// conformanceDir holds the MCP conformance suite and its Node.js, installed
// by scripts/install-npm-assets.sh (make test does).
const conformanceDir = "../conformance"

// conformanceNode is the Node.js the suite runs on: the suite needs 22 or
// later, which the npm registry serves as node-linux-<arch>.
func conformanceNode(t *testing.T) (node, suite string) {
	t.Helper()
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	node = filepath.Join(conformanceDir, "node_modules", "node-linux-"+arch, "bin", "node")
	suite = filepath.Join(conformanceDir, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js")
	for _, p := range []string{node, suite} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("SKIP_BROWSER_TESTS") == "1" {
				t.Skip("SKIP_BROWSER_TESTS=1: the MCP conformance suite is not installed")
			}
			t.Fatalf("%s missing: run scripts/install-npm-assets.sh (make test does)", p)
		}
	}
	return node, suite
}

// The official MCP conformance suite's server scenarios against /mcp/<org>.
// The suite sends no credentials, so a reverse proxy in front of the portal
// adds the agent's bearer token and changes nothing else (Host and Origin
// pass as the suite sent them, for its DNS-rebinding scenario). Scenarios
// that exercise tools, resources and prompts of the suite's reference server
// do not apply to a server whose tools are the org's credentials: they are
// listed, each with why, in testing/conformance/expected-failures.yml, and
// the suite fails if one of them starts passing or another one fails.
func TestMCPConformanceServerScenarios(t *testing.T) {
	node, suite := conformanceNode(t)
	f := newMCPOrg(t, "mcp-conformance")
	portal, err := url.Parse(f.base)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(portal)
		r.Out.Host = r.In.Host
		r.Out.Header.Set("Authorization", "Bearer "+f.token)
	}})
	defer proxy.Close()

	out := t.TempDir()
	cmd := exec.Command(node, suite, "server",
		"--url", proxy.URL+"/mcp/"+f.org,
		"--expected-failures", filepath.Join(conformanceDir, "expected-failures.yml"),
		"--output-dir", out)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	output, err := cmd.CombinedOutput()
	if strings.Contains(string(output), f.token) {
		t.Fatal("the suite's output holds the agent's token")
	}
	if err != nil {
		t.Fatalf("conformance server scenarios: %v\n%s\n%s", err, output, failedChecks(t, out))
	}
	t.Logf("%s", lastLines(string(output), 12))
}

// failedChecks gathers the checks the suite recorded as failed, with its
// reasons, from the result directories it wrote.
func failedChecks(t *testing.T, dir string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*", "checks.json"))
	var b strings.Builder
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		var checks []struct {
			Name, Status, ErrorMessage string
		}
		if json.Unmarshal(raw, &checks) != nil {
			continue
		}
		for _, c := range checks {
			if c.Status == "FAILURE" {
				fmt.Fprintf(&b, "%s: %s: %s\n", filepath.Base(filepath.Dir(file)), c.Name, c.ErrorMessage)
			}
		}
	}
	return b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// The MCP conformance suite's client auth scenarios against the engine's MCP
// OAuth client. For each scenario the suite runs a remote MCP server and its
// authorization server, and the driver (testing/conformance/client) does
// what an org admin and an agent would: a service naming the server, an app,
// a credential connected through Vault, then a call of the server's tool
// through /mcp/<org> with an agent's token. The scenarios the engine does
// not pass are listed, each with why, under client: in
// testing/conformance/expected-failures.yml; README.md, "Remote MCP
// servers", lists those that pass.
func TestMCPConformanceClientAuthScenarios(t *testing.T) {
	node, suite := conformanceNode(t)
	org := newOrg(t, "mcp-conformance-client")
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	agents, err := vault.Token(context.Background(), time.Hour, provision.AgentsPolicy(org))
	if err != nil {
		t.Fatal(err)
	}
	srv := servePortal(t, portal.Config{})
	// The suite's authorization servers accept this one client metadata
	// document URL as a client ID without reading it.
	write(t, admin, contract.Mount(org)+"/config", map[string]interface{}{
		"redirect_url":        srv.CallbackURL(),
		"client_metadata_url": "https://conformance-test.local/client-metadata.json",
	})

	driver := filepath.Join(t.TempDir(), "conformance-client")
	if out, err := exec.Command("go", "build", "-trimpath", "-o", driver, "../conformance/client").CombinedOutput(); err != nil {
		t.Fatalf("building the driver: %v\n%s", err, out)
	}
	out := t.TempDir()
	cmd := exec.Command(node, suite, "client", "--suite", "auth", "--command", driver,
		"--expected-failures", filepath.Join(conformanceDir, "expected-failures.yml"),
		"--output-dir", out)
	cmd.Env = append(os.Environ(), "NO_COLOR=1",
		"CONFORMANCE_VAULT_ADDR="+vault.Addr,
		"CONFORMANCE_ADMIN_TOKEN="+admin.Token(),
		"CONFORMANCE_AGENTS_TOKEN="+agents,
		"CONFORMANCE_ORG="+org,
		"CONFORMANCE_PORTAL="+srv.URL())
	output, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("conformance client auth scenarios: %v\n%s\n%s", err, output, failedChecks(t, out))
	}
	t.Logf("%s", lastLines(string(output), 20))
}
