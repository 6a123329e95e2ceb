package browser

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/portal/provision"
)

// TestPersonFlow walks through what a person does on the portal, in a real
// browser: sign in, add an API key and a file, filter and search, connect
// an OAuth credential through the provider's consent page, see it active,
// disconnect it, delete it, and sign out.
// Long on purpose: one story told in order, whose steps depend on the ones before.
func TestPersonFlow(t *testing.T) {
	b := newBrowser(t)
	ctx := context.Background()

	// A credential expiring in three days needs attention: the list shows
	// it first, with the action that fixes it.
	expiring := time.Now().Add(72 * time.Hour).UTC().Format(time.RFC3339)
	if _, err := st.root().Logical().WriteWithContext(ctx, "orgs/"+org+"/creds/openai-old", map[string]any{
		"type": "api_key", "service": "openai", "api_key": canaryAPIKey + "-old", "expires_at": expiring,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = st.root().Logical().Delete("orgs/" + org + "/creds/openai-old") })

	// Sign in.
	b.navigate(st.url("/"))
	if loc := b.location(); !strings.Contains(loc, "/signin") {
		t.Fatalf("signed out, / led to %s, not the sign-in page", loc)
	}
	b.check("signin")
	b.do(chromedp.SendKeys(chromedp.ID("username"), adminUser), chromedp.SendKeys(chromedp.ID("password"), adminPass))
	if status := b.click("#signin-userpass"); status != http.StatusOK {
		t.Fatalf("sign-in answered %d", status)
	}
	if loc := b.location(); !strings.HasSuffix(loc, "/orgs/"+org+"/creds") {
		t.Fatalf("after sign-in the browser is at %s", loc)
	}
	first := b.text("#creds tbody tr:first-child")
	if !strings.Contains(first, "openai-old") || !strings.Contains(first, "Needs attention") || !strings.Contains(first, "Replace key") {
		t.Errorf("the first row is %q, want openai-old needing attention with a Replace key action", first)
	}
	if got := b.text("#attention-summary"); !strings.Contains(got, "1 credential needs attention") {
		t.Errorf("attention summary %q", got)
	}
	if got := b.text("#creds tbody tr:first-child .reason"); !strings.HasPrefix(got, "expires in") {
		t.Errorf("the reason shown in text is %q, want expires in ...", got)
	}
	b.check("creds-attention")

	// Add an API key.
	b.click("#add-credential")
	b.check("add-pick-service")
	b.click("#service-stripe")
	b.check("add-api-key-form")
	b.do(
		chromedp.SetValue(chromedp.ID("name"), "stripe-live"),
		chromedp.SendKeys(chromedp.ID("description"), "payments agent"),
		chromedp.SendKeys(chromedp.ID("api_key"), canaryAPIKey),
	)
	b.click("#save")
	if loc := b.location(); !strings.HasSuffix(loc, "/orgs/"+org+"/creds/stripe-live") {
		t.Fatalf("after adding, the browser is at %s", loc)
	}
	facts := b.text("#facts")
	if !strings.Contains(facts, "…"+canaryAPIKey[len(canaryAPIKey)-4:]) || !strings.Contains(facts, "Active") {
		t.Errorf("detail facts %q lack the key hint or the active status", facts)
	}
	b.check("cred-api-key")

	// Add a file, uploaded.
	upload := filepath.Join(t.TempDir(), "client-cert.pem")
	if err := os.WriteFile(upload, []byte(canaryFile), 0o600); err != nil {
		t.Fatal(err)
	}
	b.navigate(st.url("/orgs/" + org + "/add/" + fileService))
	b.do(chromedp.SetValue(chromedp.ID("name"), "cert-store"), chromedp.SetUploadFiles(chromedp.ID("file"), []string{upload}))
	b.check("add-file-form")
	b.click("#save")
	if facts := b.text("#facts"); !strings.Contains(facts, "client-cert.pem") {
		t.Errorf("file credential facts %q lack the file name", facts)
	}

	// Add a password, for a service that needs a server too.
	b.navigate(st.url("/orgs/" + org + "/add/smtp"))
	b.do(
		chromedp.SetValue(chromedp.ID("name"), "mailer"),
		chromedp.SendKeys(chromedp.ID("username"), "bot@example.test"),
		chromedp.SendKeys(chromedp.ID("password"), canaryPassword),
		chromedp.SendKeys(chromedp.ID("host"), "smtp.example.test"),
		chromedp.SendKeys(chromedp.ID("port"), "587"),
	)
	b.check("add-password-form")
	b.click("#save")
	if facts := b.text("#facts"); !strings.Contains(facts, "bot@example.test") || !strings.Contains(facts, "smtp.example.test:587") {
		t.Errorf("password credential facts %q", facts)
	}

	// Filter by type: the URL carries the filter.
	b.navigate(st.url("/orgs/" + org + "/creds"))
	b.click(`a[href$="type=file"]`)
	if loc := b.location(); !strings.Contains(loc, "type=file") {
		t.Errorf("the type filter is not in the URL: %s", loc)
	}
	if rows := b.text("#creds tbody"); !strings.Contains(rows, "cert-store") || strings.Contains(rows, "stripe-live") {
		t.Errorf("filtered by file, the table shows %q", rows)
	}
	b.check("creds-filter-file")

	// Search by name, within the API keys.
	b.click(`a[href$="type=api_key"]`)
	b.do(chromedp.SendKeys(chromedp.ID("q"), "STRIPE"))
	b.click("#search")
	loc := b.location()
	if u, _ := url.Parse(loc); !strings.EqualFold(u.Query().Get("q"), "stripe") || u.Query().Get("type") != "api_key" {
		t.Errorf("search and filter are not both in the URL: %s", loc)
	}
	if n := b.count("#creds tbody tr"); n != 1 || !strings.Contains(b.text("#creds tbody"), "stripe-live") {
		t.Errorf("searching stripe among API keys shows %d rows: %q", n, b.text("#creds tbody"))
	}
	b.check("creds-search")
	// A shared link shows the same view.
	b.navigate(loc)
	if n := b.count("#creds tbody tr"); n != 1 {
		t.Errorf("opening the shared search URL shows %d rows", n)
	}
	b.navigate(st.url("/orgs/" + org + "/creds?q=no-such-thing"))
	if got := b.text("#empty"); !strings.Contains(got, "No credentials match") {
		t.Errorf("a search without results says %q", got)
	}
	b.check("creds-no-match")

	// Connect an OAuth credential through the provider's consent page.
	b.navigate(st.url("/orgs/" + org + "/add/" + oauthService))
	b.check("add-oauth-form")
	b.do(chromedp.SetValue(chromedp.ID("name"), "provider-mail"))
	b.click("#save")
	if loc := b.location(); !strings.HasPrefix(loc, st.oauth.URL()+"/authorize") {
		t.Fatalf("adding an OAuth credential led to %s, not the provider's consent page", loc)
	}
	b.check("provider-consent")
	b.click("#allow")
	if loc := b.location(); !strings.HasSuffix(loc, "/orgs/"+org+"/creds/provider-mail") {
		t.Fatalf("after consent the browser is at %s", loc)
	}
	if got := b.text(".flash"); !strings.Contains(got, "Connected provider-mail") {
		t.Errorf("after connecting, the message is %q", got)
	}
	facts = b.text("#facts")
	if !strings.Contains(facts, "Active") || !strings.Contains(facts, "agent-owner") {
		t.Errorf("connected credential facts %q: want Active and the account", facts)
	}
	b.check("cred-oauth-connected")

	// Disconnect, behind a confirmation.
	b.click("#disconnect")
	b.check("confirm-disconnect")
	b.click("#confirm")
	if got := b.text("#facts"); !strings.Contains(got, "Disconnected") {
		t.Errorf("after disconnecting, facts say %q", got)
	}
	b.check("cred-oauth-disconnected")

	// Delete, behind a confirmation.
	b.click("#delete")
	b.check("confirm-delete")
	b.click("#confirm")
	if loc := b.location(); !strings.HasSuffix(loc, "/orgs/"+org+"/creds") {
		t.Errorf("after deleting, the browser is at %s", loc)
	}
	if strings.Contains(b.text("#creds tbody"), "provider-mail") {
		t.Error("the deleted credential is still listed")
	}
	if sec, err := st.root().Logical().Read("orgs/" + org + "/creds/provider-mail"); err != nil || sec != nil {
		t.Errorf("the deleted credential is still in Vault (%v)", err)
	}
	b.check("creds-after-delete")

	// The apps page shows the registration, never its secret.
	b.click(`a[href$="/apps"]`)
	if got := b.text("#apps"); !strings.Contains(got, oauthApp) || !strings.Contains(got, oauthClient) {
		t.Errorf("the apps page lists %q", got)
	}
	if got := b.text("#redirect-url"); got != st.portal.CallbackURL() {
		t.Errorf("the apps page gives the redirect URL %q, want %q", got, st.portal.CallbackURL())
	}
	b.check("apps")

	// An agent that may use the API key: its login is shown once.
	b.click(`a[href$="/agents"]`)
	b.check("agents-empty")
	b.do(
		chromedp.SendKeys(chromedp.ID("agent-name"), "billing-bot"),
		chromedp.Click(chromedp.CSS(`input[value="stripe-live"]`)),
		chromedp.SendKeys(chromedp.ID("methods"), "GET"),
	)
	b.click("#create-agent")
	if got := b.text("#agent-created"); !strings.Contains(got, "billing-bot") || b.text("#secret-id") == "" {
		t.Errorf("after creating an agent the page says %q", got)
	}
	if got := b.text("#agents"); !strings.Contains(got, "stripe-live") || !strings.Contains(got, "GET") {
		t.Errorf("the agents table shows %q", got)
	}
	b.check("agent-created")
	b.navigate(st.url("/orgs/" + org + "/agents"))
	if n := b.count("#secret-id"); n != 0 {
		t.Error("the secret ID is shown again")
	}
	b.click(`a[href$="/agents/billing-bot/delete"]`)
	b.check("confirm-remove-agent")
	b.click("#confirm")
	if n := b.count("#agents"); n != 0 {
		t.Error("the removed agent is still listed")
	}

	// Sign out: the session's token is revoked.
	before := liveTokens(t, "userpass-"+adminUser)
	b.click("#signout")
	if got := b.text(".flash"); !strings.Contains(got, "signed out") {
		t.Errorf("after signing out, the page says %q", got)
	}
	b.check("signed-out")
	if after := liveTokens(t, "userpass-"+adminUser); after != before-1 {
		t.Errorf("%s had %d live tokens before sign-out and %d after: the session's token was not revoked", adminUser, before, after)
	}
	b.navigate(st.url("/orgs/" + org + "/creds"))
	if loc := b.location(); !strings.Contains(loc, "/signin") {
		t.Errorf("after sign-out, the credentials page is at %s, not behind sign-in", loc)
	}
	_, _ = st.root().Logical().Delete("orgs/" + org + "/creds/stripe-live")
	_, _ = st.root().Logical().Delete("orgs/" + org + "/creds/cert-store")
	_, _ = st.root().Logical().Delete("orgs/" + org + "/creds/mailer")
}

// TestCrossSiteFormPostRefused: a page on another origin posts a form to
// the portal with the person's cookie attached (same site, so SameSite=Lax
// lets it through); the portal refuses it and nothing is deleted.
func TestCrossSiteFormPostRefused(t *testing.T) {
	b := newBrowser(t)
	ctx := context.Background()
	if _, err := st.root().Logical().WriteWithContext(ctx, "orgs/"+org+"/creds/victim", map[string]any{
		"type": "api_key", "service": "stripe", "api_key": canaryAPIKey,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = st.root().Logical().Delete("orgs/" + org + "/creds/victim") })

	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(`<!doctype html><html lang="en"><title>Win a prize</title><body>
<form method="post" action="` + st.url("/orgs/"+org+"/creds/victim/delete") + `">
<button id="prize" type="submit">Claim your prize</button></form></body></html>`))
	}))
	defer evil.Close()

	signIn(t, b, adminUser, adminPass)
	b.navigate(evil.URL)
	if status := b.click("#prize"); status != http.StatusForbidden {
		t.Errorf("the cross-site post answered %d, want 403", status)
	}
	if got := b.text("main"); !strings.Contains(got, "sent from another site") {
		t.Errorf("the refusal says %q", got)
	}
	b.check("cross-site-refused")
	if sec, err := st.root().Logical().Read("orgs/" + org + "/creds/victim"); err != nil || sec == nil {
		t.Fatalf("the credential was deleted by a cross-site post (%v)", err)
	}
}

// TestMemberSeesNoAdminActions: a member may look and connect but the
// pages offer no delete, and Vault refuses one all the same.
func TestMemberSeesNoAdminActions(t *testing.T) {
	b := newBrowser(t)
	if _, err := st.root().Logical().Write("orgs/"+org+"/creds/shared-key", map[string]any{
		"type": "api_key", "service": "anthropic", "api_key": canaryAPIKey,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = st.root().Logical().Delete("orgs/" + org + "/creds/shared-key") })
	signIn(t, b, member, memberPw)
	if n := b.count("#add-credential"); n != 0 {
		t.Error("a member is offered to add a credential")
	}
	if n := b.count("#org-switch"); n != 0 {
		t.Error("a member of one org sees the org switcher")
	}
	b.navigate(st.url("/orgs/" + org + "/creds/shared-key"))
	if n := b.count("#delete"); n != 0 {
		t.Error("a member is offered to delete")
	}
	b.check("member-cred")
	b.navigate(st.url("/orgs/" + org + "/creds/shared-key/delete"))
	if status := b.click("#confirm"); status != http.StatusForbidden {
		t.Errorf("a member's delete answered %d, want 403", status)
	}
	b.check("member-delete-refused")
	b.navigate(st.url("/orgs/" + org + "/agents"))
	if b.count("#create-agent") != 0 || b.count("#no-agent-rights") != 1 {
		t.Error("a member is offered to create agents")
	}
	if sec, _ := st.root().Logical().Read("orgs/" + org + "/creds/shared-key"); sec == nil {
		t.Error("a member deleted a credential")
	}
}

// TestOrgSwitcher: a person in two orgs switches between them.
func TestOrgSwitcher(t *testing.T) {
	b := newBrowser(t)
	signIn(t, b, adminUser, adminPass)
	b.do(chromedp.SetValue(chromedp.ID("org-switch"), otherOrg))
	b.click(".switcher button")
	if loc := b.location(); !strings.HasSuffix(loc, "/orgs/"+otherOrg+"/creds") {
		t.Fatalf("switching orgs led to %s", loc)
	}
	if got := b.text("#empty"); !strings.Contains(got, "No credentials yet") {
		t.Errorf("the empty org says %q", got)
	}
	b.check("other-org-empty")
}

func signIn(t *testing.T, b *tab, user, password string) {
	t.Helper()
	b.navigate(st.url("/signin"))
	b.do(chromedp.SendKeys(chromedp.ID("username"), user), chromedp.SendKeys(chromedp.ID("password"), password))
	if status := b.click("#signin-userpass"); status != http.StatusOK {
		t.Fatalf("signing in as %s answered %d", user, status)
	}
}

// liveTokens counts the live Vault tokens with this display name.
func liveTokens(t *testing.T, displayName string) int {
	t.Helper()
	root := st.root()
	sec, err := root.Logical().List("auth/token/accessors")
	if err != nil || sec == nil {
		t.Fatalf("listing token accessors: %v", err)
	}
	n := 0
	for _, a := range sec.Data["keys"].([]any) {
		info, err := root.Auth().Token().LookupAccessor(a.(string))
		if err == nil && info != nil && info.Data["display_name"] == displayName {
			n++
		}
	}
	return n
}

// TestLastUsedShown: after an agent-side use through the broker, the
// list says how long ago in words, with the exact time in a title.
func TestLastUsedShown(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer upstream.Close()
	root := st.root()
	writes := []struct {
		path string
		data map[string]any
	}{
		{"orgs/" + org + "/services/echo", map[string]any{
			"types": "api_key", "base_urls": upstream.URL,
			"injection": map[string]any{"api_key": map[string]any{"style": "header", "header": "X-Api-Key", "format": "{secret}"}},
		}},
		{"orgs/" + org + "/creds/echo-key", map[string]any{"type": "api_key", "service": "echo", "api_key": canaryAPIKey}},
		{"orgs/" + org + "/proxy/echo-key", map[string]any{"method": "GET", "path": "/"}},
	}
	for _, w := range writes {
		if _, err := root.Logical().Write(w.path, w.data); err != nil {
			t.Fatalf("writing %s: %v", w.path, err)
		}
	}
	t.Cleanup(func() {
		_, _ = root.Logical().Delete("orgs/" + org + "/creds/echo-key")
		_, _ = root.Logical().Delete("orgs/" + org + "/services/echo")
	})

	// A second caller, so the detail page lists each caller's last use.
	agent, err := root.Auth().Token().Create(&api.TokenCreateRequest{
		Policies: []string{provision.AdminPolicy(org)}, DisplayName: "second-agent", TTL: "10m",
	})
	if err != nil {
		t.Fatal(err)
	}
	second := st.vault.ClientWithToken(agent.Auth.ClientToken)
	if _, err := second.Logical().Write("orgs/"+org+"/proxy/echo-key", map[string]any{"method": "GET", "path": "/"}); err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t)
	signIn(t, b, adminUser, adminPass)
	b.navigate(st.url("/orgs/" + org + "/creds/echo-key"))
	if n := b.count(`#callers li`); n != 2 {
		t.Errorf("the detail page lists %d callers, want 2 (the root token and the second agent)", n)
	}
	if got := b.text(`#callers`); !strings.Contains(got, "token-second-agent, just now") {
		t.Errorf("the callers read %q, want the second agent's use among them", got)
	}
	if hint := b.text(`#facts code`); strings.HasPrefix(hint, "…") || !strings.HasSuffix(hint, canaryAPIKey[len(canaryAPIKey)-4:]) {
		t.Errorf("the key hint reads %q", hint)
	}
	b.check("cred-callers")
	b.navigate(st.url("/orgs/" + org + "/creds?q=echo-key"))
	when := `#creds tr[data-name="echo-key"] time`
	if got := b.text(when); got != "just now" {
		t.Errorf("last used reads %q, want just now", got)
	}
	ctx, cancel := b.actx()
	defer cancel()
	title, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(when), "title"))
	if err != nil {
		t.Fatal(err)
	}
	exact, err := time.Parse("2006-01-02 15:04:05 MST", title.Value)
	if err != nil || time.Since(exact) > time.Minute || time.Since(exact) < -time.Second {
		t.Errorf("the exact time in the title is %q (%v)", title.Value, err)
	}
	b.check("last-used")
}
