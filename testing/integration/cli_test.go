package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
)

// vaultCLI runs the real vault CLI (bin/vault) against the test's Vault
// with token, as a person following the README would.
func vaultCLI(t *testing.T, token string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(vaultBin(t), args...)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+vault.Addr, "VAULT_TOKEN="+token, "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// vaultBin is the vault CLI the tests run: make test's, or bin/vault.
func vaultBin(t *testing.T) string {
	if bin := os.Getenv("VAULT_BIN"); bin != "" {
		return bin
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "bin", "vault")
}

// TestCLIObjectAndHeaderFields: the README's CLI forms for a custom
// service's injection (JSON text and @file) and for broker headers
// (name:value) work with the real vault CLI.
func TestCLIObjectAndHeaderFields(t *testing.T) {
	up := startFake(t)
	org := newOrg(t, "cli-fields")
	admin := tokenFor(t, org, provision.RoleAdmin)
	mount := contract.Mount(org)

	out, err := vaultCLI(t, admin, "write", mount+"/services/billing-api", "types=api_key", "base_urls="+up.URL,
		`injection={"api_key":{"style":"header","header":"X-Api-Key","format":"{secret}"}}`)
	if err != nil {
		t.Fatalf("injection as JSON text: %v\n%s", err, out)
	}
	file := filepath.Join(t.TempDir(), "verify.json")
	if err := os.WriteFile(file, []byte(`{"method":"GET","url":"`+up.URL+`/v1/balance","expect_status":200}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := vaultCLI(t, admin, "write", mount+"/services/billing-2", "types=api_key", "base_urls="+up.URL, "verify=@"+file); err != nil {
		t.Fatalf("verify from a file: %v\n%s", err, out)
	}
	if out, err := vaultCLI(t, admin, "write", mount+"/creds/billing", "type=api_key", "service=billing-api", "api_key="+brokerKeyA); err != nil {
		t.Fatalf("credential: %v\n%s", err, out)
	}
	out, err = vaultCLI(t, admin, "write", "-field=body_text", mount+"/proxy/billing", "method=POST", "path=/echo",
		"headers=Content-Type:application/json", "headers=X-Trace:abc")
	if err != nil {
		t.Fatalf("proxy with headers: %v\n%s", err, out)
	}
	if !strings.Contains(out, `"X-Trace":["abc"]`) || !strings.Contains(out, `"X-Api-Key":["[REDACTED]"]`) {
		t.Errorf("the service saw: %.400s", out)
	}
	out, err = vaultCLI(t, admin, "write", mount+"/services/broken", "types=api_key", "oauth=not-json")
	if err == nil || !strings.Contains(out, "oauth must be a JSON object") {
		t.Errorf("a field that is not JSON: %v\n%s", err, out)
	}
}

// TestCLISendsMail: the README's and path-help's mail examples, with the
// real vault CLI and an agent's token: list fields comma-separated, an
// attachment list from a file.
func TestCLISendsMail(t *testing.T) {
	f := newMCPOrg(t, "cli-mail")
	att := filepath.Join(t.TempDir(), "attachments.json")
	if err := os.WriteFile(att, []byte(`[{"filename": "report.csv", "content": "aWQsdG90YWwKMSw0Mgo="}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := vaultCLI(t, f.token, "write", "orgs/"+f.org+"/mail/mailer", "from=ops@acme.example", "to=oncall@acme.example,lead@acme.example",
		"subject=Disk full", "text=db-1 at 91%", "attachments=@"+att)
	if err != nil || !strings.Contains(out, "recipients") {
		t.Fatalf("vault write mail: %v\n%s", err, out)
	}
	msgs := f.smtp.Messages()
	if len(msgs) != 1 || len(msgs[0].To) != 2 || !strings.Contains(string(msgs[0].Data), "filename=report.csv") {
		t.Fatalf("the server got %d messages", len(msgs))
	}
	out, err = vaultCLI(t, f.token, "read", "orgs/"+f.org+"/mail/mailer")
	if err != nil || !strings.Contains(out, "smtp") || strings.Contains(out, mcpSMTPPassword) {
		t.Fatalf("vault read mail/<cred>: %v\n%s", err, out)
	}
}
