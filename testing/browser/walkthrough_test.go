package browser

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/clankteam/credentials/testing/devstack"
	"github.com/clankteam/credentials/testing/harness"
)

// TestFirstTenMinutes follows the README's "first ten minutes", step by
// step, on the stack make run starts (devstack, with a Vault of its own)
// and in the browser; the shell commands of step 5 are read from the
// README and run as written, with the stack's addresses.
// Long on purpose: one story told in order, whose steps depend on the ones before.
func TestFirstTenMinutes(t *testing.T) {
	b := newBrowser(t)
	ctx := context.Background()

	// 1. make run. Its own Vault, as on a machine without VAULT_ADDR, on
	// free ports so that a make run beside the tests is left alone.
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("VAULT_TOKEN", "")
	logs := &syncBuffer{}
	stack, err := devstack.Start(ctx, devstack.Options{PortalAddr: "127.0.0.1:0", VaultAddr: "127.0.0.1:0"}, logs)
	if err != nil {
		t.Fatalf("make run's stack: %v", err)
	}
	t.Cleanup(func() {
		if err := stack.Stop(); err != nil {
			t.Errorf("stopping the stack: %v", err)
		}
		if leaked := logs.leaks(); leaked != "" {
			t.Errorf("the stack's logs show a secret: %s", leaked)
		}
	})
	var shown bytes.Buffer
	stack.Describe(&shown)
	for _, want := range []string{"Portal:  " + stack.PortalURL, "Sign in: demo / demo-password", "Vault:   " + stack.VaultAddr} {
		if !strings.Contains(shown.String(), want) {
			t.Fatalf("make run shows no %q:\n%s", want, shown.String())
		}
	}
	b.portalURL = stack.PortalURL
	creds := stack.PortalURL + "/orgs/" + stack.Org + "/creds"

	// 2. Sign in; five credentials, stripe-test needing attention and
	// demo-oauth not connected.
	b.navigate(stack.PortalURL + "/")
	b.do(chromedp.SendKeys(chromedp.ID("username"), "demo"), chromedp.SendKeys(chromedp.ID("password"), "demo-password"))
	b.click("#signin-userpass")
	if loc := b.location(); loc != creds {
		t.Fatalf("after sign-in the browser is at %s", loc)
	}
	if n := b.count("#creds tbody tr"); n != 5 {
		t.Errorf("the demo org lists %d credentials, want 5: %s", n, b.text("#creds tbody"))
	}
	if got := b.text(`#creds tr[data-name="stripe-test"]`); !strings.Contains(got, "Needs attention") {
		t.Errorf("stripe-test reads %q", got)
	}
	if got := b.text(`#creds tr[data-name="demo-oauth"]`); !strings.Contains(got, "Connect") {
		t.Errorf("demo-oauth reads %q, want a Connect action", got)
	}
	b.check("demo-creds")

	// 3. Connect demo-oauth through the local provider's consent page.
	b.click(`#creds tr[data-name="demo-oauth"] .fix :is(a, button)`)
	b.check("demo-connect")
	if got := b.text("#continue"); !strings.Contains(got, "Continue to 127.0.0.1:") {
		t.Errorf("the connect page offers %q", got)
	}
	b.click("#continue")
	b.check("demo-consent")
	b.click("#allow")
	if loc := b.location(); loc != creds+"/demo-oauth" {
		t.Fatalf("after consent the browser is at %s", loc)
	}
	if facts := b.text("#facts"); !strings.Contains(facts, "Active") || !strings.Contains(facts, "Account") {
		t.Errorf("demo-oauth after connecting: %q", facts)
	}
	b.check("demo-oauth-connected")

	// 4. An agent that may use demo-api.
	b.click(`a[href$="/agents"]`)
	b.do(chromedp.SendKeys(chromedp.ID("agent-name"), "first-agent"), chromedp.Click(chromedp.CSS(`input[value="demo-api"]`)))
	b.click("#create-agent")
	roleID, secretID := b.text("#role-id"), b.text("#secret-id")
	if roleID == "" || secretID == "" {
		t.Fatalf("the agents page shows no login: %q", b.text("main"))
	}
	b.check("first-agent-created")

	// 5. The README's commands: log in, curl the broker.
	script := walkthroughShell(t)
	script = strings.NewReplacer(
		"<Role ID>", roleID, "<Secret ID>", secretID,
		"http://127.0.0.1:8200", stack.VaultAddr, "http://127.0.0.1:8080", stack.PortalURL,
	).Replace(script)
	sh := exec.Command("bash", "-e", "-o", "pipefail", "-c", script+"\necho \"AGENT_TOKEN=$AGENT_TOKEN\"")
	sh.Env = append(os.Environ(), "PATH="+filepath.Dir(vaultCLI(t))+":"+os.Getenv("PATH"), "HOME="+t.TempDir())
	out, err := sh.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"available"`) {
		t.Fatalf("step 5 (%v):\n%s\n%s", err, script, out)
	}
	token := regexp.MustCompile(`AGENT_TOKEN=(\S+)`).FindStringSubmatch(string(out))[1]

	// 6. The official SDK, the broker as its base URL.
	client := openai.NewClient(option.WithBaseURL(stack.PortalURL+"/broker/"+stack.Org+"/demo-api/v1/"),
		option.WithAPIKey(token), option.WithMaxRetries(0))
	models, err := client.Models.List(ctx)
	if err != nil || len(models.Data) == 0 {
		t.Fatalf("the SDK through the broker: %v", err)
	}

	// 7. Last used, and by whom.
	b.navigate(creds)
	if got := b.text(`#creds tr[data-name="demo-api"] time`); got != "just now" {
		t.Errorf("demo-api was last used %q, want just now", got)
	}
	b.check("demo-last-used")
	b.navigate(creds + "/demo-api")
	if got := b.text("#facts"); !strings.Contains(got, "just now by first-agent") {
		t.Errorf("demo-api's page reads %q, want last used just now by first-agent", got)
	}
	b.check("demo-api-callers")
}

// walkthroughShell is the shell block of the README's "first ten minutes".
func walkthroughShell(t *testing.T) string {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## The first ten minutes")
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok2 := strings.Cut(section, "```sh\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("the README has no shell block under \"The first ten minutes\"")
	}
	var lines []string
	for _, l := range strings.Split(block, "\n") {
		lines = append(lines, strings.TrimSpace(l))
	}
	return strings.Join(lines, "\n")
}

// vaultCLI is the vault binary make test built.
func vaultCLI(t *testing.T) string {
	if bin := os.Getenv("VAULT_BIN"); bin != "" {
		return bin
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "bin", "vault")
}
