package credentials

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Event types, as webhooks receive them.
const (
	eventConnected      = "credential.connected"
	eventNeedsAttention = "credential.needs_attention"
	eventRecovered      = "credential.recovered"
	eventExpiring       = "credential.expiring"
	eventRevoked        = "credential.revoked"
	eventDeleted        = "credential.deleted"
	eventAgentCreated   = "agent.created"
	eventAgentRevoked   = "agent.revoked"
	// eventApprovalRequested: a call waits for a person's approval.
	eventApprovalRequested = "approval.requested"
	eventTest              = "webhook.test"
)

var webhookEventTypes = []string{eventConnected, eventNeedsAttention, eventRecovered, eventExpiring,
	eventRevoked, eventDeleted, eventAgentCreated, eventAgentRevoked, eventApprovalRequested}

// webhookEvent is one event's body. Nothing in it is secret: names,
// kinds and statuses, as LIST creds/ shows them.
type webhookEvent struct {
	ID        string    `json:"-"`
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      eventData `json:"data"`
}

type eventData struct {
	Org        string `json:"org,omitempty"`
	Credential string `json:"credential,omitempty"`
	Service    string `json:"service,omitempty"`
	CredType   string `json:"credential_type,omitempty"`
	Status     string `json:"status,omitempty"`
	Reason     string `json:"status_reason,omitempty"`
	Previous   string `json:"previous_status,omitempty"`
	Agent      string `json:"agent,omitempty"`
	Approval   string `json:"approval_id,omitempty"`
	Call       string `json:"call,omitempty"`
}

func (b *backend) newEvent(mountPoint, typ string, data eventData) *webhookEvent {
	var id [12]byte
	_, _ = rand.Read(id[:])
	if data.Org == "" {
		data.Org = orgOfMount(mountPoint)
	}
	return &webhookEvent{ID: "msg_" + hex.EncodeToString(id[:]), Type: typ, Timestamp: b.now().UTC().Truncate(time.Second), Data: data}
}

// orgOfMount is the org of mount orgs/<org>/.
func orgOfMount(mount string) string {
	return strings.TrimSuffix(strings.TrimPrefix(mount, "orgs/"), "/")
}

// Announced states beside the statuses: a needs-attention for an expiry
// coming, and for an oauth2 credential not connected yet, are told apart.
const (
	announcedExpiring     = "expiring"
	announcedNotConnected = "not_connected"
)

// announcedOf is what an event says of a credential's status.
func announcedOf(sum credSummary, status, reason string) string {
	switch {
	case status == statusNeedsAttention && sum.NotConnected:
		return announcedNotConnected
	case status == statusNeedsAttention && strings.HasPrefix(reason, "expires "):
		return announcedExpiring
	}
	return status
}

// statusEvent is the event for a credential whose announced status goes
// from before to now ("" before: a new credential); "" for none.
func statusEvent(before, now string) string {
	if before == now {
		return ""
	}
	switch now {
	case statusActive:
		if before == statusNeedsAttention || before == statusExpired || before == announcedExpiring {
			return eventRecovered
		}
		return eventConnected
	case announcedExpiring:
		return eventExpiring
	case statusNeedsAttention, statusExpired:
		return eventNeedsAttention
	case statusDisconnected:
		return eventRevoked
	}
	return ""
}

// announce compares c's status with the one last announced and, when it
// changed, queues the event for the org's webhooks and notes it in c (the
// caller then stores c). warnBefore is the org's.
func (b *backend) announce(ctx context.Context, s logical.Storage, c *credential, warnBefore time.Duration) {
	sum := c.Summary()
	status, reason := sum.Status(b.now(), warnBefore)
	now := announcedOf(sum, status, reason)
	if c.Announced == now {
		return
	}
	before := c.Announced
	c.Announced = now
	if before == "" && c.Revision > 0 {
		// Stored before events were: its first announcement is silent.
		return
	}
	typ := statusEvent(before, now)
	if typ == "" {
		return
	}
	b.queueEvent(ctx, s, b.newEvent(b.mountPoint(), typ, eventData{
		Credential: c.Name, Service: c.Service, CredType: c.Type, Status: status, Reason: reason, Previous: previousStatus(before),
	}))
}

func previousStatus(announced string) string {
	if announced == announcedExpiring || announced == announcedNotConnected {
		return statusNeedsAttention
	}
	return announced
}

// queueEvent puts ev in the outbox of each webhook that takes it. A
// failure to queue is logged, never the caller's failure: the change the
// event tells of is already made.
func (b *backend) queueEvent(ctx context.Context, s logical.Storage, ev *webhookEvent) {
	hooks, err := b.webhooksOf(ctx, s)
	if err != nil {
		b.logger.Warn("webhooks: listing for an event", "type", ev.Type, "error", err)
		return
	}
	queued := false
	for _, w := range hooks {
		if !w.wants(ev) {
			continue
		}
		if err := b.putOutbox(ctx, s, &outboxEntry{Webhook: w.Name, Event: ev, EventID: ev.ID}); err != nil {
			b.logger.Warn("webhooks: queueing an event", "webhook", w.Name, "type", ev.Type, "error", err)
			continue
		}
		queued = true
	}
	if queued {
		b.webhooks.kick()
	}
}

// emitStatusChanges announces the credentials whose status changed with
// the clock alone (an expiry coming, a refresh failing past the token's
// expiry), which no write marked: the periodic function's pass.
func (b *backend) emitStatusChanges(ctx context.Context, s logical.Storage) error {
	hooks, err := b.webhooksOf(ctx, s)
	if err != nil || len(hooks) == 0 {
		return err
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return err
	}
	lines, err := b.index.Lines(ctx, s)
	if err != nil {
		return err
	}
	for _, l := range lines {
		status, reason := l.Status(b.now(), cfg.WarnBefore)
		if l.Announced == "" || announcedOf(l.Summary, status, reason) == l.Announced {
			continue
		}
		if err := b.reannounce(ctx, s, l.Name, cfg.WarnBefore); err != nil {
			return fmt.Errorf("announcing %s: %w", l.Name, err)
		}
	}
	return nil
}

func (b *backend) reannounce(ctx context.Context, s logical.Storage, name string, warnBefore time.Duration) error {
	lock := b.credLock(name)
	lock.Lock()
	defer lock.Unlock()
	c, err := getCredential(ctx, s, name)
	if err != nil || c == nil {
		return err
	}
	defer zeroCredentialFile(c)
	before := c.Announced
	b.announce(ctx, s, c, warnBefore)
	if c.Announced == before {
		return nil
	}
	return b.index.Save(ctx, s, c)
}
