// Package webhookrecv is an organization's webhook receiver for tests: it
// checks each delivery's signature with Standard Webhooks' own library
// (not the engine's code) and keeps the events in the order they came.
package webhookrecv

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Event is one delivery the receiver took.
type Event struct {
	ID   string
	Type string
	Data map[string]string
	Body string
}

// Receiver listens on 127.0.0.1 until Close.
type Receiver struct {
	*httptest.Server
	// Secret is the signing secret to give the webhook (whsec_...).
	Secret string

	mu     sync.Mutex
	events []Event
	fail   int
	bad    int
	seen   chan struct{}
}

// Start starts a receiver with a fresh secret.
func Start() (*Receiver, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	r := &Receiver{Secret: "whsec_" + base64.StdEncoding.EncodeToString(key), seen: make(chan struct{}, 1)}
	verifier, err := standardwebhooks.NewWebhook(r.Secret)
	if err != nil {
		return nil, err
	}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		r.mu.Lock()
		defer r.mu.Unlock()
		if err := verifier.Verify(body, req.Header); err != nil {
			r.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.fail > 0 {
			r.fail--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var ev struct {
			Type string            `json:"type"`
			Data map[string]string `json:"data"`
		}
		if json.Unmarshal(body, &ev) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.events = append(r.events, Event{ID: req.Header.Get("webhook-id"), Type: ev.Type, Data: ev.Data, Body: string(body)})
		select {
		case r.seen <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	return r, nil
}

// FailNext makes the receiver answer 503 to the next n signed deliveries.
func (r *Receiver) FailNext(n int) {
	r.mu.Lock()
	r.fail = n
	r.mu.Unlock()
}

// Events returns the events taken so far.
func (r *Receiver) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Types returns the taken events' types, in order.
func (r *Receiver) Types() []string {
	var out []string
	for _, e := range r.Events() {
		out = append(out, e.Type)
	}
	return out
}

// BadSignatures counts deliveries whose signature did not check.
func (r *Receiver) BadSignatures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bad
}

// WaitFor waits up to max for n events and returns those taken.
func (r *Receiver) WaitFor(n int, max time.Duration) []Event {
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	for {
		if ev := r.Events(); len(ev) >= n {
			return ev
		}
		select {
		case <-r.seen:
		case <-deadline.C:
			return r.Events()
		}
	}
}
