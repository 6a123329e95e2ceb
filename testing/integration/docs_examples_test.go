package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/harness"
)

// The README's and path-help's examples are run here, as written, with the
// real vault CLI against the real Vault: a person copies them, so each one
// must do what its text says. Placeholders (…, ...) become test values; the
// org acme becomes the test's org. A new example without an entry in
// docExamples fails the test, so an example cannot go unchecked.

// docExample is what one documented command is expected to answer.
type docExample struct {
	// want are texts the answer contains; with fails, the command must
	// fail (a documented refusal, or a call to a provider this offline
	// test cannot reach) and want is in its message.
	want  []string
	fails bool
	// before are commands run first, for state the text assumes.
	before []string
	// token is whose token runs it: "" the org admin, "agent" an agent
	// given every credential, "operator" the root token.
	token string
	// skip says why a command is not run and what checks it instead.
	skip string
}

// docSecrets are the values the placeholders of secret fields become;
// no answer may contain one.
var docSecrets = map[string]string{
	"api_key":       "sk_live_docscanary7431",
	"client_secret": "docs-client-secret-5120",
	"password":      "docs-password-8821",
	"refresh_token": "docs-refresh-token-3307",
}

var docPlaceholderValues = map[string]string{
	"client_id": "docs-client",
	"username":  "alerts@acme.example",
	"code":      "docs-code",
	"state":     "docs-state",
}

// stripeLive is the README's first credential, for examples after its
// deletion in path-help's.
const stripeLive = "vault write orgs/acme/creds/stripe-live type=api_key service=stripe api_key=sk_live_…"

var docExamples = map[string]docExample{
	// README: the CLI section, in order.
	"vault read orgs/acme/config": {want: []string{"refresh_ahead", "warn_before"}},
	"vault write orgs/acme/config redirect_url=https://portal.example/oauth/callback warn_before=72h": {},
	// README: proxy mode.
	"vault write orgs/acme/config proxy_other_hosts=tunnel": {},
	"vault list -detailed orgs/acme/services":               {want: []string{"anthropic", "stripe"}},
	"vault read orgs/acme/services/anthropic":               {want: []string{"api.anthropic.com"}},
	`vault write orgs/acme/services/billing-api types=api_key base_urls=https://billing.example injection='{"api_key":{"style":"header","header":"X-Api-Key","format":"{secret}"}}'`: {},
	"vault write orgs/acme/apps/google-workspace service=google client_id=… client_secret=… scopes=gmail,calendar":                                                                   {},
	"vault write orgs/acme/creds/stripe-live type=api_key service=stripe api_key=sk_live_…":                                                                                          {},
	"vault write orgs/acme/creds/mailer type=password service=smtp username=… password=… host=smtp.example.com port=587":                                                             {},
	"vault write orgs/acme/creds/gcp type=file service=gcp-service-account file=@<(base64 -w0 key.json)":                                                                             {},
	"vault write orgs/acme/creds/gmail type=oauth2 service=google app=google-workspace":                                                                                              {},
	"vault read orgs/acme/creds/stripe-live": {want: []string{"key_hint", "status"}},
	"vault list -detailed orgs/acme/creds":   {want: []string{"gmail", "mailer"}},
	`curl -s -H "X-Vault-Token: $VAULT_TOKEN" "$VAULT_ADDR/v1/orgs/acme/creds?list=true&type=api_key&q=stripe"`: {want: []string{`"stripe-live"`, `"status":"active"`}},
	"vault write -f orgs/acme/creds/stripe-live/verify":                                                         {fails: true, want: []string{"api.stripe.com"}, before: []string{stripeLive}},
	"vault write -f -field=body_text orgs/acme/proxy/stripe-live/GET/v1/balance":                                {fails: true, want: []string{"api.stripe.com"}},
	"vault delete orgs/acme/creds/gcp":                                                                          {},
	// README: OAuth lifecycle.
	"vault write -f orgs/acme/creds/gmail/connect":                                         {want: []string{"auth_url", "accounts.google.com"}},
	"vault write orgs/acme/creds/gmail/connect replace=true":                               {want: []string{"auth_url"}},
	"vault write orgs/acme/creds/gmail/callback code=… state=…":                            {fails: true, want: []string{"state"}},
	"vault write -f orgs/acme/creds/gmail/refresh":                                         {fails: true, want: []string{"connect"}},
	"vault write -f orgs/acme/creds/gmail/disconnect":                                      {},
	"vault write orgs/acme/creds/gh type=oauth2 service=github app=gh-app refresh_token=…": {fails: true, want: []string{"gh-app"}},
	"vault write orgs/acme/apps/graph service=microsoft client_id=… client_secret=… grant=client_credentials scopes=https://graph.microsoft.com/.default":                                  {},
	"vault write orgs/acme/creds/repo-bot type=file service=github-app file=$(base64 -w0 app-key.pem) app_id=123456 installation_id=987654 repositories=api,web permissions=contents=read": {},
	"vault write -f orgs/acme/refresh-failing": {want: []string{"refreshed"}},
	"vault read orgs/acme/services/notion":     {want: []string{"api.notion.com"}},
	"vault path-help orgs/acme/creds/x":        {want: []string{"Example: type=api_key"}},
	`vault write orgs/acme/mail/mailer from=ops@acme.example to=oncall@acme.example subject="Disk full" text="db-1 at 91%"`: {fails: true, want: []string{"smtp.example.com"}, token: "agent"},
	// README: webhooks and health checks. The test send goes nowhere
	// this offline test can reach, and says so.
	"vault write orgs/acme/webhooks/ops url=https://hooks.acme.example/credentials secret=whsec_$(openssl rand -base64 32) events=credential.needs_attention,credential.recovered": {},
	"vault write -f orgs/acme/webhooks/ops/test":            {want: []string{"webhook.test", "delivered", "false"}},
	"vault read orgs/acme/webhook-log":                      {want: []string{"deliveries", "webhook.test"}},
	"vault write orgs/acme/config health_check_interval=6h": {},
	// README: the kill switch and the trail.
	"vault write orgs/acme/revoke-all scope=org include_grants=true confirm=acme": {want: []string{"job_id"}},
	"vault read orgs/acme/revoke-all/<job_id>":                                    {skip: "the job's ID is the write's answer"},
	"vault write identity/entity/name/orgs-acme-agent-billing disabled=true":      {skip: "Vault's own identity path: TestKillSwitchStopsAgentsAndGrants stops agents this way through the portal's code"},
	"vault read orgs/acme/agents/billing/trail":                                   {want: []string{"calls"}},
	"vault path-help orgs/acme/revoke-all":                                        {want: []string{"include_grants"}},
	// README: presets' remote MCP servers.
	"vault read orgs/acme/services/linear":                                   {want: []string{"mcp_server", "https://mcp.linear.app/mcp"}},
	"vault write orgs/acme/services/linear-mcp mcp_from=linear":              {skip: "discovery reaches the preset's server on the internet: TestServiceFromAPresetsMCPServer covers it with the provider client's fake"},
	"vault write orgs/acme/apps/linear-mcp service=linear-mcp register=true": {skip: "needs the service above"},
	// README: guardrails.
	"vault write orgs/acme/approval-rules/stripe-live rules='POST /v1/refunds,DELETE /v1/customers/+' ttl=30m": {before: []string{stripeLive}},
	"vault list -detailed orgs/acme/approvals": {want: []string{"pending"}, before: []string{
		"vault write orgs/acme/proxy/stripe-live method=POST path=/v1/refunds || true"}},
	"vault write -f orgs/acme/approvals/<id>/approve":                                            {skip: "the ID is the held call's answer: TestVaultPathCallsWaitForApproval and TestApprovalsInThePortal decide approvals"},
	`vault write orgs/acme/approvals/<id>/deny reason="refunds over 100 EUR go through finance"`: {skip: "as above"},
	"vault write orgs/acme/limits/per-agent-rate agent=* calls=60 period=minute":                 {},
	"vault write orgs/acme/limits/openai-daily credential=openai usd=25 period=day":              {},
	"vault list -detailed orgs/acme/limits":                                                      {want: []string{"per-agent-rate", "openai-daily"}},
	"vault read orgs/acme/limits/openai-daily":                                                   {want: []string{"usd"}},
	// path-help: the kill switch and the trail.
	"vault list auth/approle/role/orgs-acme-agent-billing/secret-id":                                                 {skip: "Vault's own AppRole path: TestKillSwitchStopsAgentsAndGrants destroys secret IDs this way through the portal's code"},
	"vault write auth/approle/role/orgs-acme-agent-billing/secret-id-accessor/destroy secret_id_accessor=<accessor>": {skip: "Vault's own AppRole path, as above"},
	"vault write orgs/acme/revoke-all scope=credential credential=gmail include_grants=true confirm=gmail":           {want: []string{"job_id"}},
	"vault read -format=json orgs/acme/agents/billing/trail limit=50":                                                {want: []string{"calls"}},
	// README: agents.
	"VAULT_TOKEN=$(vault write -field=token auth/approle/login role_id=… secret_id=…)": {token: "login", want: []string{"logged in"}},
	// README: the operator's registration.
	"vault plugin register -sha256=$(sha256sum vault-plugin-secrets-credentials | cut -d' ' -f1) -command=vault-plugin-secrets-credentials -env CREDENTIALS_EDGE_KEYS=… -env CREDENTIALS_PRIVATE_TARGETS=10.20.0.0/16 secret credentials": {skip: "the harness registers the engine with these flags for every test (harness.registerPlugin)"},

	// path-help, in the order of pathHelpCommands.
	"vault list -detailed orgs/acme/apps": {},
	"vault write orgs/acme/apps/google-workspace service=google client_id=... client_secret=... scopes=gmail,calendar": {},
	"vault read orgs/acme/services/stripe": {want: []string{"api.stripe.com"}},
	"vault write orgs/acme/services/billing-api types=api_key base_urls=https://billing.internal.example injection='{\"api_key\":{\"style\":\"header\",\"header\":\"X-Api-Key\",\"format\":\"{secret}\"}}'": {},
	"vault write orgs/acme/services/billing-v2 types=api_key base_urls=https://billing.internal.example verify=@verify.json":                                                                                {},
	`vault write orgs/acme/services/keycloak types=oauth2 base_urls=https://id.example oauth='{"discovery_url": "https://id.example/realms/acme/.well-known/openid-configuration"}'`:                        {fails: true, want: []string{"discovery: cannot resolve id.example"}},
	"vault write orgs/acme/creds/stripe-live type=api_key service=stripe api_key=sk_live_...":                                                                                                               {},
	"vault delete orgs/acme/creds/stripe-live":                                                      {},
	"vault write orgs/acme/creds/gmail/callback code=... state=...":                                 {fails: true, want: []string{"state"}},
	"vault read orgs/acme/proxy/stripe-live":                                                        {want: []string{"api.stripe.com"}, token: "agent", before: []string{stripeLive}},
	"vault write orgs/acme/proxy/stripe-live method=GET path=/v1/balance":                           {fails: true, want: []string{"cannot resolve api.stripe.com"}},
	"vault write -field=body_text orgs/acme/proxy/stripe-live/GET/v1/charges query=limit=3":         {fails: true, want: []string{"cannot resolve api.stripe.com"}},
	"vault read orgs/acme/metrics":                                                                  {want: []string{"credentials_broker_calls_total{outcome=failed,path=vault}"}},
	`curl -s -H "X-Vault-Token: $VAULT_TOKEN" "$VAULT_ADDR/v1/orgs/acme/metrics?format=prometheus"`: {want: []string{"# TYPE credentials_refresh_due_backlog gauge"}},
	"vault write orgs/acme/proxy/anthropic method=POST path=/v1/messages headers=Content-Type:application/json body=$(base64 -w0 request.json)": {
		fails: true, want: []string{"api.anthropic.com"},
		before: []string{"vault write orgs/acme/creds/anthropic type=api_key service=anthropic api_key=sk_live_…"},
	},
	`vault write orgs/acme/mail/mailer from=ops@acme.example to=oncall@acme.example subject="Disk almost full" text="db-1 is at 91%."`:        {fails: true, want: []string{"smtp.example.com"}, token: "agent"},
	`vault write orgs/acme/mail/mailer from=ops@acme.example to=a@acme.example subject=Report text="Attached." attachments=@attachments.json`: {fails: true, want: []string{"smtp.example.com"}, token: "agent"},
}

// readmeCommands returns the vault commands of the README: the lines of
// its code blocks that run vault (continuations joined, comments
// dropped), and the inline code that is a whole command.
func readmeCommands(t *testing.T) []string {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	inBlock := false
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			if inBlock && !isOutput(lines) {
				cmds = append(cmds, commandsIn(lines)...)
			}
			lines = nil
			inBlock = !inBlock
			continue
		}
		if inBlock {
			lines = append(lines, line)
			continue
		}
		for _, m := range inlineCode.FindAllStringSubmatch(line, -1) {
			if isExample(m[1]) {
				cmds = append(cmds, m[1])
			}
		}
	}
	return cmds
}

// isOutput: a block showing what a command prints ("  Portal:  http://…"),
// whose commands are for make run's stack; TestFirstTenMinutes runs those.
func isOutput(lines []string) bool {
	for _, l := range lines {
		if outputLabel.MatchString(l) {
			return true
		}
	}
	return false
}

var outputLabel = regexp.MustCompile(`^\s+[A-Z][a-z ]+:\s`)

var inlineCode = regexp.MustCompile("`(vault [^`]+)`")

// isExample: a whole command about this product, not a pattern with
// <placeholders> or a flag mentioned in passing.
func isExample(cmd string) bool {
	return strings.Contains(cmd, "orgs/acme") && !regexp.MustCompile(`<[a-z ]+>`).MatchString(cmd)
}

// commandsIn joins continuation lines and keeps those that run vault.
func commandsIn(lines []string) []string {
	var cmds []string
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			line = strings.TrimSuffix(line, `\`) + " " + strings.TrimSpace(lines[i])
		}
		apiCall := strings.HasPrefix(line, "curl ") && strings.Contains(line, "$VAULT_ADDR/v1/")
		if !apiCall && !strings.HasPrefix(line, "vault ") && !strings.HasPrefix(line, "VAULT_TOKEN=$(vault ") {
			continue
		}
		cmds = append(cmds, normalizeCommand(line))
	}
	return cmds
}

var comment = regexp.MustCompile(`\s+#\s.*$`)
var spaces = regexp.MustCompile(`\s+`)

func normalizeCommand(cmd string) string {
	cmd = comment.ReplaceAllString(cmd, "")
	return strings.TrimSpace(spaces.ReplaceAllString(cmd, " "))
}

// pathHelpCommands asks Vault for the help of each of the engine's paths
// and returns the commands its descriptions show.
func pathHelpCommands(t *testing.T, org, token string) []string {
	paths := []string{"config", "services", "services/x", "apps/x", "creds", "creds/x", "creds/x/verify",
		"creds/x/connect", "creds/x/callback", "creds/x/disconnect", "creds/x/refresh",
		"proxy/x", "proxy/x/GET/v1", "mail/x", "refresh-failing", "metrics",
		"webhooks", "webhooks/x", "webhooks/x/test", "webhook-log", "agent-events",
		"revoke-all", "trail-report", "agents/x/trail",
		"approval-rules/x", "approvals", "approvals/request", "limits", "limits/x", "limits/lease", "limits/spend"}
	var cmds []string
	seen := map[string]bool{}
	for _, p := range paths {
		out, err := vaultCLI(t, token, "path-help", "orgs/"+org+"/"+p)
		if err != nil {
			t.Fatalf("path-help %s: %v\n%s", p, err, out)
		}
		_, desc, _ := strings.Cut(out, "## DESCRIPTION")
		for _, c := range commandsIn(strings.Split(desc, "\n")) {
			if !seen[c] {
				seen[c] = true
				cmds = append(cmds, c)
			}
		}
	}
	return cmds
}

var placeholder = regexp.MustCompile(`(\w+)=(\S*?)(…|\.\.\.)`)

// runnable turns a documented command into one for this test's org.
func runnable(cmd, org string, extra map[string]string) string {
	cmd = strings.ReplaceAll(cmd, "orgs/acme/", "orgs/"+org+"/")
	cmd = strings.ReplaceAll(cmd, "confirm=acme", "confirm="+org)
	return placeholder.ReplaceAllStringFunc(cmd, func(m string) string {
		field := placeholder.FindStringSubmatch(m)[1]
		if v, ok := docSecrets[field]; ok {
			return field + "=" + v
		}
		if v, ok := extra[field]; ok {
			return field + "=" + v
		}
		if v, ok := docPlaceholderValues[field]; ok {
			return field + "=" + v
		}
		return m
	})
}

// docFixtures writes the files the examples read, in the directory they
// run in.
func docFixtures(t *testing.T) string {
	dir := t.TempDir()
	files := map[string][]byte{
		"key.json":         testServiceAccount(t),
		"app-key.pem":      testAppKeyPEM(t),
		"request.json":     []byte(`{"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}`),
		"attachments.json": []byte(`[{"filename": "report.csv", "content": "aWQsdG90YWwKMSw0Mgo="}]`),
		"verify.json":      []byte(`{"method": "GET", "url": "https://billing.internal.example/v1/me", "expect_status": 200}`),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestDocumentedExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the vault CLI")
	}
	// One org, as one reader would: path-help's examples build on what
	// the README's made.
	org := newOrg(t, "docs")
	admin := tokenFor(t, org, provision.RoleAdmin)
	readme, help := readmeCommands(t), pathHelpCommands(t, org, admin)
	runDocExamples(t, org, admin, "readme-agent", readme)
	runDocExamples(t, org, admin, "help-agent", help)
	t.Logf("%d README examples and %d path-help examples checked", len(readme), len(help))
}

// runDocExamples runs cmds in order; an agent named agent is made, given
// every credential there is then, for the first that needs one.
func runDocExamples(t *testing.T, org, admin, agent string, cmds []string) {
	dir := docFixtures(t)
	var agentToken string
	var login *provision.AgentLogin
	agentFor := func() string {
		if agentToken == "" {
			l, err := provision.CreateAgent(context.Background(), managerClient(t, org), org,
				provision.AgentSpec{Name: agent, Creds: docAgentCreds(t, org, admin)})
			if err != nil {
				t.Fatalf("creating the agent: %v", err)
			}
			login = l
			agentToken = agentLogin(t, l)
		}
		return agentToken
	}
	for _, doc := range cmds {
		ex, ok := docExamples[doc]
		if !ok {
			t.Errorf("a documented command without an expectation in docExamples:\n  %s", doc)
			continue
		}
		if ex.skip != "" {
			t.Logf("not run (%s): %s", ex.skip, doc)
			continue
		}
		token, extra := admin, map[string]string{}
		switch ex.token {
		case "agent":
			token = agentFor()
		case "login":
			agentFor()
			token = ""
			extra["role_id"], extra["secret_id"] = login.RoleID, login.SecretID
		}
		for _, b := range ex.before {
			if out, err := runShell(t, dir, admin, runnable(b, org, extra)); err != nil {
				t.Fatalf("%s: before it, %s: %v\n%s", doc, b, err, out)
			}
		}
		cmd := runnable(doc, org, extra)
		if ex.token == "login" {
			// The token works; it is not printed.
			cmd += ` && test -n "$VAULT_TOKEN" && vault token lookup >/dev/null && echo logged in`
		}
		out, err := runShell(t, dir, token, cmd)
		for name, secret := range docSecrets {
			if strings.Contains(out, secret) {
				t.Errorf("%s: the answer holds the %s", doc, name)
				out = strings.ReplaceAll(out, secret, "[the "+name+"]") // not into the test's output either
			}
		}
		switch {
		case ex.fails && err == nil:
			t.Errorf("%s: succeeded, the test expects a refusal:\n%s", doc, out)
		case !ex.fails && err != nil:
			t.Errorf("%s: %v\n%s", doc, err, out)
		}
		for _, w := range ex.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: the answer lacks %q:\n%s", doc, w, out)
			}
		}
	}
}

// docAgentCreds: the agent is given every credential the org has when it
// is first needed.
func docAgentCreds(t *testing.T, org, admin string) []string {
	s, err := vault.ClientWithToken(admin).Logical().List(contract.Mount(org) + "/creds")
	if err != nil || s == nil {
		t.Fatalf("listing creds: %v", err)
	}
	var names []string
	for _, k := range s.Data["keys"].([]interface{}) {
		names = append(names, k.(string))
	}
	return names
}

// runShell runs cmd in bash (the examples use $(...) and <(...)) with the
// vault CLI first on PATH.
func runShell(t *testing.T, dir, token, cmd string) (string, error) {
	t.Helper()
	bin, err := filepath.Abs(filepath.Dir(vaultBin(t)))
	if err != nil {
		t.Fatal(err)
	}
	sh := exec.Command("bash", "-o", "pipefail", "-c", cmd)
	sh.Dir = dir
	sh.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "VAULT_ADDR="+vault.Addr, "VAULT_TOKEN="+token, "HOME="+dir)
	out, err := sh.CombinedOutput()
	return string(out), err
}

// testServiceAccount is a GCP service-account key file with a fresh key.
func testServiceAccount(t *testing.T) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(docRSAKey(t))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "docs-project", "private_key_id": "key-1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "robot@docs-project.iam.gserviceaccount.com", "client_id": "1234567890",
		"token_uri": "https://oauth2.googleapis.com/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testAppKeyPEM is a GitHub App private key as GitHub hands it out.
func testAppKeyPEM(t *testing.T) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(docRSAKey(t))})
}

func docRSAKey(t *testing.T) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
