package browser

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestEveryPageStateIsChecked: the states a page shows only sometimes
// (a credential that needs attention with its fix, one disconnected, a
// form answered with an error, a refused OAuth callback, an unknown page)
// are screenshotted and checked by axe like the rest, so that a colour or
// label that only one state uses cannot go unnoticed.
func TestEveryPageStateIsChecked(t *testing.T) {
	ctx := context.Background()
	root := st.root()
	expiring := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	for name, data := range map[string]map[string]any{
		// An OAuth credential that needs attention offers Connect.
		"oauth-expiring": {"type": "oauth2", "service": oauthService, "app": oauthApp, "expires_at": expiring},
		"key-expiring":   {"type": "api_key", "service": "openai", "api_key": canaryAPIKey + "-states", "expires_at": expiring},
		"oauth-idle":     {"type": "oauth2", "service": oauthService, "app": oauthApp},
	} {
		if _, err := root.Logical().WriteWithContext(ctx, "orgs/"+org+"/creds/"+name, data); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = root.Logical().Delete("orgs/" + org + "/creds/" + name) })
	}
	b := newBrowser(t)
	signIn(t, b, adminUser, adminPass)

	b.navigate(st.url("/orgs/" + org + "/creds"))
	if got := b.text(`#creds tr[data-name="oauth-expiring"]`); !strings.Contains(got, "Needs attention") || !strings.Contains(got, "Connect") {
		t.Errorf("the expiring OAuth credential reads %q, want needs attention with Connect", got)
	}
	b.check("list-needs-attention-connect")
	b.navigate(st.url("/orgs/" + org + "/creds/oauth-expiring"))
	b.check("detail-needs-attention-oauth")
	b.navigate(st.url("/orgs/" + org + "/creds/key-expiring"))
	b.check("detail-needs-attention-key")
	b.navigate(st.url("/orgs/" + org + "/creds/oauth-idle"))
	b.check("detail-not-connected")
	b.navigate(st.url("/orgs/" + org + "/creds?status=disconnected"))
	b.check("list-filtered-disconnected")

	// Forms answered with what is wrong.
	b.navigate(st.url("/orgs/" + org + "/add/stripe"))
	b.do(chromedp.SetValue(chromedp.ID("name"), "Bad Name!"), chromedp.SendKeys(chromedp.ID("api_key"), "x"))
	b.do(chromedp.Evaluate[chromedp.Void](`document.getElementById("name").removeAttribute("pattern")`))
	b.click("#save")
	if b.count(".flash-error, #form-error, [role=alert]") == 0 {
		t.Errorf("a bad name is answered without an error: %q", b.text("main"))
	}
	b.check("add-form-error")
	b.navigate(st.url("/orgs/" + org + "/agents"))
	b.do(chromedp.Evaluate[chromedp.Void](`document.getElementById("agent-name").removeAttribute("pattern")`),
		chromedp.SendKeys(chromedp.ID("agent-name"), "Bad Agent"))
	b.click("#create-agent")
	if b.count("#form-error") == 0 {
		t.Errorf("a bad agent name is answered without an error: %q", b.text("main"))
	}
	b.check("agents-form-error")

	// A callback with a state nobody issued says why it is refused.
	b.navigate(st.url("/oauth/callback?code=x&state=not-issued"))
	if got := b.text("main"); !strings.Contains(strings.ToLower(got), "state") {
		t.Errorf("a refused callback says %q", got)
	}
	b.check("callback-refused")
	b.navigate(st.url("/orgs/" + org + "/creds/no-such-credential"))
	b.check("credential-not-found")
}
