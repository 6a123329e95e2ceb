package browser

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/clankteam/credentials/testing/webhookrecv"
)

// TestWebhooksInThePortal: an admin adds a webhook in chromium (a bad
// secret is refused with the reason and nothing stored), sends it a test
// event, and sees the credential's events in the delivery log; then
// reconnects a working OAuth credential and is shown the receipt of the
// grant it replaced, and retries the failing refreshes with the
// credentials page's button. The receiver checks every signature.
func TestWebhooksInThePortal(t *testing.T) {
	recv, err := webhookrecv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recv.Close)
	t.Cleanup(func() {
		_, _ = st.root().Logical().Delete("orgs/" + org + "/webhooks/ops")
		_, _ = st.root().Logical().Delete("orgs/" + org + "/creds/hooked-mail")
	})
	b := newBrowser(t)
	signIn(t, b, adminUser, adminPass)

	b.click(`a[href$="/webhooks"]`)
	b.check("webhooks-empty")
	fill := func(secret string) {
		b.do(
			chromedp.SetValue(chromedp.ID("webhook-name"), "ops"),
			chromedp.SetValue(chromedp.ID("webhook-url"), recv.URL+"/hooks"),
			chromedp.SetValue(chromedp.ID("webhook-secret"), secret),
			chromedp.Click(chromedp.CSS(`input[value="credential.connected"]`)),
			chromedp.Click(chromedp.CSS(`input[value="credential.deleted"]`)),
		)
		b.click("#add-webhook")
	}
	fill("not-a-secret")
	if got := b.text("#form-error"); !strings.Contains(got, "whsec_") {
		t.Errorf("a bad secret is refused with %q", got)
	}
	b.check("webhooks-bad-secret")
	if sec, err := st.root().Logical().Read("orgs/" + org + "/webhooks/ops"); err != nil || sec != nil {
		t.Fatalf("a refused webhook was stored (%v)", err)
	}
	b.navigate(st.url("/orgs/" + org + "/webhooks"))
	fill(recv.Secret)
	if got := b.text("#webhooks"); !strings.Contains(got, "credential.connected, credential.deleted") || strings.Contains(b.html(), recv.Secret[6:]) {
		t.Errorf("the webhooks table shows %q (or the secret)", got)
	}
	b.click("#test-ops")
	if got := b.text(".flash"); !strings.Contains(got, "reached ops: it answered 204") {
		t.Errorf("after the test send the page says %q", got)
	}
	b.check("webhooks-tested")

	// Connect an OAuth credential: the webhook is told.
	b.navigate(st.url("/orgs/" + org + "/add/" + oauthService))
	b.do(chromedp.SetValue(chromedp.ID("name"), "hooked-mail"))
	b.click("#save")
	b.click("#allow")
	if got := b.text(".flash"); !strings.Contains(got, "Connected hooked-mail") {
		t.Fatalf("after connecting, the message is %q", got)
	}
	if events := recv.WaitFor(2, 30*time.Second); len(events) < 2 || events[1].Type != "credential.connected" || events[1].Data["credential"] != "hooked-mail" {
		t.Fatalf("the receiver got %v", recv.Types())
	}
	b.navigate(st.url("/orgs/" + org + "/webhooks"))
	if got := b.text("#delivery-log tbody tr:first-child"); !strings.Contains(got, "credential.connected") || !strings.Contains(got, "delivered (204)") {
		t.Errorf("the newest delivery reads %q", got)
	}
	b.check("webhooks-log")

	// Reconnect it while it works: the grant replaced is revoked at the
	// provider, and the person is told so.
	b.navigate(st.url("/orgs/" + org + "/creds/hooked-mail"))
	b.click("#connect")
	b.click("#continue")
	b.click("#allow")
	if got := b.text(".flash"); !strings.Contains(got, "The grant it replaced: Revoked at the provider: refresh_token") {
		t.Errorf("after reconnecting, the message is %q", got)
	}

	// The credentials page's retry of failing refreshes.
	b.navigate(st.url("/orgs/" + org + "/creds"))
	b.check("creds-retry-failing")
	b.click("#refresh-failing")
	if got := b.text(".flash"); !strings.Contains(got, "No refresh was failing.") {
		t.Errorf("after retrying the failing refreshes the page says %q", got)
	}
	if n := recv.BadSignatures(); n != 0 {
		t.Errorf("%d deliveries failed the signature check", n)
	}
	if types := recv.Types(); strings.Join(types, " ") != "webhook.test credential.connected" {
		t.Errorf("the receiver got %v: a reconnect of a working grant is no event, and the webhook takes only what it chose", types)
	}
}
