package credentials

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/webhookrecv"
)

func startWebhookReceiver(t *testing.T) *webhookrecv.Receiver {
	t.Helper()
	r, err := webhookrecv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func deliver(t *testing.T, b *backend, s logical.Storage) {
	t.Helper()
	if err := b.deliverDue(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// TestWebhookWritesAreValidated: each bad field is refused with a 400
// saying what is wrong, nothing is stored, and a read never shows the
// secret.
func TestWebhookWritesAreValidated(t *testing.T) {
	b, s, _ := getTestBackend(t)
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	for _, c := range []struct {
		desc string
		data map[string]interface{}
		says string
	}{
		{"no url", map[string]interface{}{"secret": secret}, "url is required"},
		{"ftp", map[string]interface{}{"url": "ftp://hooks.example/x", "secret": secret}, "absolute https URL"},
		{"user info", map[string]interface{}{"url": "https://u:p@hooks.example/x", "secret": secret}, "without user info"},
		{"plain http to a public host", map[string]interface{}{"url": "http://hooks.example/x", "secret": secret}, "only https"},
		{"no secret", map[string]interface{}{"url": "https://hooks.example/x"}, "secret is required"},
		{"secret without prefix", map[string]interface{}{"url": "https://hooks.example/x", "secret": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "whsec_"},
		{"short secret", map[string]interface{}{"url": "https://hooks.example/x", "secret": "whsec_c2hvcnQ="}, "24 to 64"},
		{"unknown event", map[string]interface{}{"url": "https://hooks.example/x", "secret": secret, "events": "credential.exploded"}, "is not one of"},
		{"bad credential", map[string]interface{}{"url": "https://hooks.example/x", "secret": secret, "credential": "Not A Name"}, "credential:"},
		{"unknown field", map[string]interface{}{"url": "https://hooks.example/x", "secret": secret, "colour": "red"}, "unknown field"},
	} {
		resp := do(t, b, s, logical.CreateOperation, "webhooks/ops", c.data)
		if !resp.IsError() || !strings.Contains(resp.Error().Error(), c.says) {
			t.Errorf("%s: got %v, want an error saying %q", c.desc, resp, c.says)
		}
	}
	if keys, _ := s.List(context.Background(), webhookConfigPrefix); len(keys) != 0 {
		t.Fatalf("refused writes stored %v", keys)
	}
	mustOK(t, do(t, b, s, logical.CreateOperation, "webhooks/ops", map[string]interface{}{"url": "https://hooks.example/x", "secret": secret, "events": "credential.recovered,credential.needs_attention"}))
	read := mustOK(t, do(t, b, s, logical.ReadOperation, "webhooks/ops", nil))
	raw, _ := json.Marshal(read.Data)
	if strings.Contains(string(raw), "MfKQ9r8G") || read.Data["url"] != "https://hooks.example/x" {
		t.Fatalf("read: %s", raw)
	}
	list := mustOK(t, do(t, b, s, logical.ListOperation, "webhooks/", nil))
	if raw, _ := json.Marshal(list.Data); strings.Contains(string(raw), "MfKQ9r8G") || !strings.Contains(string(raw), `"ops"`) {
		t.Fatalf("list: %s", raw)
	}
	// An update leaves out the secret: the one stored stays.
	mustOK(t, do(t, b, s, logical.UpdateOperation, "webhooks/ops", map[string]interface{}{"description": "on call"}))
	w, _ := getWebhook(context.Background(), s, "ops")
	if key, _ := parseWebhookSecret(secret); string(w.Secret) != string(key) || len(w.Events) != 2 {
		t.Fatalf("after an update: %+v", w)
	}
}

// TestWebhookEventsFollowTheStatus: a receiver sees, in order and signed,
// the events of a key's life: added (connected), refused by the service
// (needs attention), working again (recovered), an expiry coming, seen by
// the periodic pass with no write (expiring), deleted. A receiver that
// fails gets the event again after the backoff, and the later events
// wait for it. No body holds the key.
func TestWebhookEventsFollowTheStatus(t *testing.T) {
	b, s, clock := getTestBackend(t)
	recv := startWebhookReceiver(t)
	up := startUpstream(t)
	localService(t, b, s, "checked", map[string]interface{}{
		"base_urls": up.URL,
		"verify":    map[string]interface{}{"method": "GET", "url": up.URL + "/v1/balance", "expect_status": 200},
	})
	mustOK(t, do(t, b, s, logical.CreateOperation, "webhooks/ops", map[string]interface{}{"url": recv.URL + "/hook", "secret": recv.Secret}))
	mount := "orgs/acme/"
	req := func(op logical.Operation, path string, data map[string]interface{}) *logical.Response {
		t.Helper()
		resp, err := b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Data: data, Storage: s, MountPoint: mount})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	const wrong = "sk_test_WRONGwrongWRONG0000"
	mustOK(t, req(logical.CreateOperation, "creds/billing", map[string]interface{}{"type": "api_key", "service": "checked", "api_key": brokerKey}))
	deliver(t, b, s)
	mustOK(t, req(logical.UpdateOperation, "creds/billing", map[string]interface{}{"api_key": wrong}))
	mustOK(t, req(logical.UpdateOperation, "creds/billing/verify", nil))

	// The receiver is down: the needs-attention event waits for its
	// retry, and the recovery after it waits in line.
	recv.FailNext(2)
	deliver(t, b, s)
	mustOK(t, req(logical.UpdateOperation, "creds/billing", map[string]interface{}{"api_key": brokerKey}))
	deliver(t, b, s) // the head's retry is not due yet: nothing is sent
	if got := recv.Types(); len(got) != 1 {
		t.Fatalf("before the retry is due the receiver has %v", got)
	}
	clock.advance(5 * time.Second)
	deliver(t, b, s) // the second attempt fails too
	clock.advance(30 * time.Second)
	deliver(t, b, s)

	expires := clock.now().Add(10 * 24 * time.Hour).Format(time.RFC3339)
	mustOK(t, req(logical.UpdateOperation, "creds/billing", map[string]interface{}{"expires_at": expires}))
	clock.advance(4 * 24 * time.Hour)
	if err := b.periodic(context.Background(), &logical.Request{Storage: s, MountPoint: mount}); err != nil {
		t.Fatal(err)
	}
	deliver(t, b, s)
	mustOK(t, req(logical.DeleteOperation, "creds/billing", nil))
	deliver(t, b, s)

	want := []string{eventConnected, eventNeedsAttention, eventRecovered, eventExpiring, eventDeleted}
	if got := recv.Types(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("the receiver saw %v, want %v", got, want)
	}
	if n := recv.BadSignatures(); n != 0 {
		t.Errorf("%d deliveries failed the signature check", n)
	}
	events := recv.Events()
	ids := map[string]bool{}
	for _, e := range events {
		if ids[e.ID] || !strings.HasPrefix(e.ID, "msg_") || e.Data["credential"] != "billing" || e.Data["org"] != "acme" {
			t.Errorf("event %+v", e)
		}
		ids[e.ID] = true
	}
	if na := events[1].Data; na["status"] != statusNeedsAttention || !strings.Contains(na["status_reason"], "401") {
		t.Errorf("the needs-attention event says %v", na)
	}
	for _, e := range events {
		if strings.Contains(e.Body, brokerKey) || strings.Contains(e.Body, wrong) {
			t.Fatalf("a key in a webhook body: %s", e.Body)
		}
	}
	log := mustOK(t, req(logical.ReadOperation, "webhook-log", nil))
	deliveries := log.Data["deliveries"].([]interface{})
	if len(deliveries) != 7 {
		t.Fatalf("the log has %d deliveries, want 7 (5 events, 2 failed attempts)", len(deliveries))
	}
	failed := deliveries[len(deliveries)-2].(map[string]interface{}) // newest first: the one before connected
	if failed["delivered"] != false || failed["status"] != 503 || failed["attempt"] != 1 || failed["next_attempt_at"] == nil {
		t.Errorf("the first failed attempt is logged as %v", failed)
	}
}

// TestWebhookTestSendAndGivingUp: webhooks/<name>/test answers how the
// receiver answered; an event the receiver never takes is given up after
// the last retry, and a deleted webhook's events are dropped.
func TestWebhookTestSendAndGivingUp(t *testing.T) {
	b, s, clock := getTestBackend(t)
	recv := startWebhookReceiver(t)
	mustOK(t, do(t, b, s, logical.CreateOperation, "webhooks/ops", map[string]interface{}{"url": recv.URL, "secret": recv.Secret}))
	sent := mustOK(t, do(t, b, s, logical.UpdateOperation, "webhooks/ops/test", nil))
	if sent.Data["delivered"] != true || sent.Data["status"] != 204 || sent.Data["type"] != eventTest {
		t.Fatalf("test send: %v", sent.Data)
	}

	recv.FailNext(100)
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/k", map[string]interface{}{"type": "api_key", "service": "openai", "api_key": "sk-webhook-canary-000000000000"}))
	for range len(webhookRetries) + 1 {
		deliver(t, b, s)
		clock.advance(2 * time.Hour)
	}
	if keys, _ := s.List(context.Background(), webhookOutboxPrefix+"ops/"); len(keys) != 0 {
		t.Fatalf("after the last retry the outbox still holds %v", keys)
	}
	log, _ := readWebhookLog(context.Background(), s)
	if last := log[len(log)-1]; last.Attempt != len(webhookRetries)+1 || !strings.Contains(last.Error, "given up") {
		t.Fatalf("the last attempt is logged as %+v", last)
	}

	mustOK(t, do(t, b, s, logical.DeleteOperation, "creds/k", nil))
	mustOK(t, do(t, b, s, logical.DeleteOperation, "webhooks/ops", nil))
	deliver(t, b, s)
	if keys, _ := s.List(context.Background(), webhookOutboxPrefix); len(keys) != 0 {
		t.Fatalf("a deleted webhook's events stay queued: %v", keys)
	}
}

// TestStatusEvents: which event each change of the announced status
// makes.
func TestStatusEvents(t *testing.T) {
	for _, c := range []struct{ before, now, want string }{
		{"", announcedNotConnected, ""},
		{"", statusActive, eventConnected},
		{announcedNotConnected, statusActive, eventConnected},
		{statusActive, statusNeedsAttention, eventNeedsAttention},
		{statusActive, statusExpired, eventNeedsAttention},
		{statusNeedsAttention, statusActive, eventRecovered},
		{announcedExpiring, statusActive, eventRecovered},
		{statusActive, announcedExpiring, eventExpiring},
		{statusActive, statusDisconnected, eventRevoked},
		{statusDisconnected, statusActive, eventConnected},
		{statusActive, statusActive, ""},
	} {
		if got := statusEvent(c.before, c.now); got != c.want {
			t.Errorf("%q → %q: %q, want %q", c.before, c.now, got, c.want)
		}
	}
}
