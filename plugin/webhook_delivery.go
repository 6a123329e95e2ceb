package credentials

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/plugin/store"
)

// Delivery. Each webhook has its own queue in storage (the outbox), in
// the order the events happened; the active node's deliverer sends the
// head of each queue, and a failed head holds the rest back until its
// retry is due, so a receiver sees the events in order. The queue is in
// storage, so events survive a restart or a change of leader; the new
// active node's deliverer takes up where the old one stopped.

const (
	webhookOutboxPrefix = "webhooks/outbox/"
	webhookLogKey       = "webhooks/log"
	// webhookLogKept bounds the delivery log.
	webhookLogKept = 200
	// webhookTimeout bounds one delivery.
	webhookTimeout = 10 * time.Second
	// webhookPerPass bounds the deliveries of one pass of the deliverer.
	webhookPerPass = 200
	// webhookEvery is how often the deliverer looks for due retries.
	webhookEvery = 5 * time.Second
)

// webhookRetries are the waits before each retry; after the last the
// event is given up.
var webhookRetries = []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour}

type webhookRuntime struct {
	client *http.Client
	// configMu serialises changes to webhooks' configuration.
	configMu sync.Mutex
	// cacheMu guards cached, the org's webhooks (nil: not read yet).
	cacheMu sync.Mutex
	cached  *[]*webhookConfig
	// passMu: one delivery pass at a time.
	passMu sync.Mutex
	// logMu guards the delivery log's read-modify-write.
	logMu sync.Mutex
	seq   atomic.Uint64
	wake  chan struct{}
}

func newWebhookRuntime(guard *egress.Guard) *webhookRuntime {
	return &webhookRuntime{
		client: guard.Client(egress.ClientOptions{Timeout: webhookTimeout, MaxIdleConnsPerHost: 4}),
		wake:   make(chan struct{}, 1),
	}
}

// kick has the deliverer look at the outbox now.
func (r *webhookRuntime) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// outboxEntry is one event waiting for one webhook.
type outboxEntry struct {
	Webhook  string        `json:"webhook"`
	EventID  string        `json:"event_id"`
	Event    *webhookEvent `json:"event"`
	Attempts int           `json:"attempts,omitempty"`
	NextAt   time.Time     `json:"next_at,omitzero"`
}

func (b *backend) putOutbox(ctx context.Context, s logical.Storage, e *outboxEntry) error {
	key := fmt.Sprintf("%s%s/%020d-%08d", webhookOutboxPrefix, e.Webhook, b.now().UnixNano(), b.webhooks.seq.Add(1)%1e8)
	entry, err := logical.StorageEntryJSON(key, e)
	if err != nil {
		return err
	}
	return s.Put(ctx, entry)
}

// startWebhookDeliverer runs the deliverer until cleanup.
func (b *backend) startWebhookDeliverer(bg *background) {
	bg.loop(webhookEvery, b.webhooks.wake, b.writeSafe, func(ctx context.Context) {
		if err := b.deliverDue(ctx, b.storage); err != nil && ctx.Err() == nil {
			b.logger.Warn("webhooks: delivering", "error", err)
		}
	})
}

// deliverDue sends the head of each webhook's queue that is due, and the
// next ones while they succeed.
func (b *backend) deliverDue(ctx context.Context, s logical.Storage) error {
	b.webhooks.passMu.Lock()
	defer b.webhooks.passMu.Unlock()
	queues, err := s.List(ctx, webhookOutboxPrefix)
	if err != nil {
		return fmt.Errorf("listing the outbox: %w", err)
	}
	budget := webhookPerPass
	for _, q := range queues {
		name := strings.TrimSuffix(q, "/")
		w, err := getWebhook(ctx, s, name)
		if err != nil {
			return err
		}
		keys, err := s.List(ctx, webhookOutboxPrefix+q)
		if err != nil {
			return fmt.Errorf("listing the outbox of %s: %w", name, err)
		}
		for _, k := range keys {
			if budget == 0 || ctx.Err() != nil {
				return ctx.Err()
			}
			key := webhookOutboxPrefix + q + k
			if w == nil {
				// The webhook was deleted: its events go with it.
				if err := s.Delete(ctx, key); err != nil {
					return err
				}
				continue
			}
			e, err := store.ReadJSON[outboxEntry](ctx, s, key, "outbox entry")
			if err != nil {
				return err
			}
			if e == nil {
				continue
			}
			if e.NextAt.After(b.now()) {
				break // the head waits for its retry; the rest wait for it
			}
			budget--
			e.Event.ID = e.EventID
			rec := b.deliverOnce(ctx, w, e.Event, e.Attempts+1)
			delivered := rec.Status >= 200 && rec.Status < 300
			if !delivered && ctx.Err() != nil {
				return ctx.Err() // stopped mid-delivery: tried again later
			}
			e.Attempts++
			if delivered || e.Attempts > len(webhookRetries) {
				if !delivered {
					rec.Error += "; given up"
				}
				err = s.Delete(ctx, key)
			} else {
				e.NextAt = b.now().Add(webhookRetries[e.Attempts-1])
				rec.NextAt = e.NextAt
				var entry *logical.StorageEntry
				if entry, err = logical.StorageEntryJSON(key, e); err == nil {
					err = s.Put(ctx, entry)
				}
			}
			if lerr := b.appendWebhookLog(ctx, s, rec); lerr != nil {
				b.logger.Warn("webhooks: recording a delivery", "webhook", name, "error", lerr)
			}
			if err != nil {
				return err
			}
			if !delivered {
				break
			}
		}
	}
	return nil
}

// deliveryRecord is one attempt, as the delivery log keeps it.
type deliveryRecord struct {
	At      time.Time `json:"at"`
	Webhook string    `json:"webhook"`
	EventID string    `json:"event_id"`
	Type    string    `json:"type"`
	Attempt int       `json:"attempt"`
	Status  int       `json:"status,omitempty"`
	Error   string    `json:"error,omitempty"`
	NextAt  time.Time `json:"next_at,omitzero"`
	Millis  int64     `json:"duration_ms"`
}

func (r deliveryRecord) response() map[string]interface{} {
	out := map[string]interface{}{
		"at": r.At.Format(time.RFC3339), "webhook": r.Webhook, "event_id": r.EventID, "type": r.Type,
		"attempt": r.Attempt, "status": r.Status, "error": r.Error, "duration_ms": r.Millis,
		"delivered": r.Status >= 200 && r.Status < 300,
	}
	if !r.NextAt.IsZero() {
		out["next_attempt_at"] = r.NextAt.Format(time.RFC3339)
	}
	return out
}

// deliverOnce POSTs ev to w, signed, and records how it went.
func (b *backend) deliverOnce(ctx context.Context, w *webhookConfig, ev *webhookEvent, attempt int) deliveryRecord {
	start := b.now()
	rec := deliveryRecord{At: start.UTC(), Webhook: w.Name, EventID: ev.ID, Type: ev.Type, Attempt: attempt}
	body, err := json.Marshal(ev)
	if err != nil {
		rec.Error = "encoding the event failed"
		return rec
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	ctx, cancel := context.WithTimeout(ctx, webhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		rec.Error = "the webhook's URL cannot be called"
		return rec
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "vault-plugin-secrets-credentials/"+Version)
	req.Header.Set("webhook-id", ev.ID)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("webhook-signature", "v1,"+signWebhook(w.Secret, ev.ID, ts, body))
	began := time.Now()
	resp, err := b.webhooks.client.Do(req)
	rec.Millis = time.Since(began).Milliseconds()
	if err != nil {
		rec.Error = deliveryError(err)
		return rec
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	rec.Status = resp.StatusCode
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		rec.Error = "the receiver answered " + resp.Status
	}
	return rec
}

// signWebhook is Standard Webhooks' v1 signature: HMAC-SHA256 of
// "<id>.<timestamp>.<body>", base64.
func signWebhook(secret []byte, id, ts string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// deliveryError says why a delivery failed without the URL, which may be
// a capability URL whose path is its secret.
func deliveryError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, egress.ErrPrivateTarget):
		return "the receiver's address is not public, nor one the operator allows"
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Client.Timeout"):
		return fmt.Sprintf("no answer within %s", webhookTimeout)
	}
	return truncate(err.Error(), 200)
}

func readWebhookLog(ctx context.Context, s logical.Storage) ([]deliveryRecord, error) {
	recs, err := store.ReadJSON[[]deliveryRecord](ctx, s, webhookLogKey, "webhook log")
	if err != nil || recs == nil {
		return nil, err
	}
	return *recs, nil
}

func (b *backend) appendWebhookLog(ctx context.Context, s logical.Storage, rec deliveryRecord) error {
	b.webhooks.logMu.Lock()
	defer b.webhooks.logMu.Unlock()
	recs, err := readWebhookLog(ctx, s)
	if err != nil {
		return err
	}
	recs = append(recs, rec)
	if len(recs) > webhookLogKept {
		recs = recs[len(recs)-webhookLogKept:]
	}
	entry, err := logical.StorageEntryJSON(webhookLogKey, recs)
	if err != nil {
		return err
	}
	return s.Put(ctx, entry)
}
