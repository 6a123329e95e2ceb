package portal

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
)

// Authorization at the edge. Vault decides every call with the agent's own
// token. The first call of a token for a credential asks the engine for the
// sealed injection on the call's own Vault path: that request is the
// authorization, and the engine refreshes or mints a token if due and
// records the use. Until the engine's use_until (seconds later), further
// calls of the same token ask Vault only whether the token may update the
// call's Vault path (sys/capabilities-self, answered by Vault's core
// without a plugin round trip; calls of a token that arrive together share
// one, see broker_checks.go) and reuse the injection, kept as ciphertext
// and opened for the call alone. A revoked token, a deleted agent or a
// narrowed policy is refused on its next call either way.
//
// The injection is kept sealed under a key of this process (AES-256-GCM)
// rather than as the engine's HPKE ciphertext: opening HPKE costs a KEM
// decapsulation (about 0.3 ms, a third of the edge's CPU per call), and
// the process key is no weaker than the edge's private key beside it in
// the same memory. Either way no secret is in memory in plain form between
// calls.

// maxSealedEntries bounds the edge's cache of sealed injections; past it
// the cache starts over, which costs one engine call per token.
const maxSealedEntries = 10000

// sealedCache holds sealed injections (ciphertext) by token, org and
// credential.
type sealedCache struct {
	// aead seals the entries; its key lives only in this process.
	aead cipher.AEAD
	// mu guards entries.
	mu      sync.Mutex
	entries map[string]sealedEntry
}

type sealedEntry struct {
	// sealed is the injection's JSON sealed under the cache's key, with
	// its nonce in front.
	sealed   []byte
	useUntil time.Time
}

// newSealedCache makes a cache with a fresh key of its own.
func newSealedCache() sealedCache {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic("portal: no randomness for the edge's cache key: " + err.Error())
	}
	block, _ := aes.NewCipher(key)
	clear(key)
	aead, _ := cipher.NewGCM(block)
	return sealedCache{entries: map[string]sealedEntry{}, aead: aead}
}

// seal and open protect one injection while it waits in the cache; key
// binds it to its token, org and credential.
func (c *sealedCache) seal(key string, plain []byte) []byte {
	nonce := make([]byte, c.aead.NonceSize(), c.aead.NonceSize()+len(plain)+c.aead.Overhead())
	_, _ = rand.Read(nonce)
	return c.aead.Seal(nonce, nonce, plain, []byte(key))
}

func (c *sealedCache) open(key string, sealed []byte) ([]byte, error) {
	n := c.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("short")
	}
	return c.aead.Open(nil, sealed[:n], sealed[n:], []byte(key))
}

func (c *sealedCache) get(key string, now time.Time) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !now.Before(e.useUntil) {
		return nil, false
	}
	return e.sealed, true
}

func (c *sealedCache) put(key string, sealed []byte, useUntil time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxSealedEntries {
		now := time.Now()
		for k, e := range c.entries {
			if !now.Before(e.useUntil) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxSealedEntries {
			clear(c.entries)
		}
	}
	c.entries[key] = sealedEntry{sealed: sealed, useUntil: useUntil}
}

func (c *sealedCache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, key)
}

// authorize has Vault decide the call and returns the opened injection.
func (h *brokerHandler) authorize(ctx context.Context, call *edgeCall, method string) (*egress.EdgeInjection, *egress.Error) {
	ctx, cancel := context.WithTimeout(ctx, edgeVaultTimeout)
	defer cancel()
	path := contract.CallPath(call.org, call.cred, method, call.decoded)
	key := tokenKey(call.token, call.org, call.cred)

	local, cached := h.sealed.get(key, time.Now())
	if call.upstreamRefused {
		cached = false
	}
	if cached {
		// Vault's check is started first; the injection is opened and read
		// meanwhile (in parallel when another processor picks the check
		// up, else just before the check is sent: measured, the same
		// either way at c=1, see docs/benchmarks.md), and used only once
		// Vault has said yes.
		decided := h.checks.start(call.token, path)
		inj, openFail := h.openCached(key, local, call.cred)
		if fail := h.decide(ctx, decided, call, method); fail != nil {
			if inj != nil {
				inj.Material.Zero()
			}
			if fail.Status == http.StatusUnauthorized {
				h.sealed.drop(key)
			}
			return nil, fail
		}
		if openFail != nil {
			return nil, openFail
		}
		return h.withLease(ctx, call, inj)
	}
	sealed, useUntil, fail := h.fetchSealed(ctx, call, method, path)
	if fail != nil {
		return nil, fail
	}
	plain, err := h.key.OpenRaw(call.mount(), call.cred, sealed)
	if err != nil {
		h.logger.Error("broker: opening a sealed injection", "org", call.org, "cred", call.cred, "error", err)
		return nil, &egress.Error{Status: http.StatusBadGateway, Msg: "the engine's injection could not be opened: is the engine configured with this portal's edge key?"}
	}
	defer clear(plain)
	h.sealed.put(key, h.sealed.seal(key, plain), useUntil)
	inj, fail := h.readInjection(key, plain, call.cred)
	if fail != nil {
		return nil, fail
	}
	return h.withLease(ctx, call, inj)
}

// openCached opens and reads a cached injection.
func (h *brokerHandler) openCached(key string, sealed []byte, cred string) (*egress.EdgeInjection, *egress.Error) {
	plain, err := h.sealed.open(key, sealed)
	if err != nil {
		h.sealed.drop(key)
		return nil, &egress.Error{Status: http.StatusServiceUnavailable, Msg: "the edge's cache failed; try again"}
	}
	defer clear(plain)
	return h.readInjection(key, plain, cred)
}

// readInjection parses an opened injection; one that cannot be read
// leaves the cache, so the next call asks the engine again.
func (h *brokerHandler) readInjection(key string, plain []byte, cred string) (*egress.EdgeInjection, *egress.Error) {
	inj, err := egress.ParseInjection(plain, cred)
	if err != nil {
		h.sealed.drop(key)
		return nil, &egress.Error{Status: http.StatusBadGateway, Msg: "the engine's injection could not be read"}
	}
	return inj, nil
}

// withLease takes the call's share of its credential's limits, if any:
// a step after Vault's decision, since the lease is the engine's.
func (h *brokerHandler) withLease(ctx context.Context, call *edgeCall, inj *egress.EdgeInjection) (*egress.EdgeInjection, *egress.Error) {
	if inj.Limited {
		if fail := h.leases.take(ctx, call); fail != nil {
			inj.Material.Zero()
			return nil, fail
		}
	}
	return inj, nil
}

// fetchSealed asks the engine for the injection of this call, sealed to
// the edge's key, with the agent's token.
func (h *brokerHandler) fetchSealed(ctx context.Context, call *edgeCall, method, path string) (string, time.Time, *egress.Error) {
	var out struct {
		Data map[string]any `json:"data"`
	}
	body := map[string]any{egress.FieldEdgeKey: h.key.ID}
	if call.upstreamRefused {
		body["upstream_refused"] = true
	}
	if fail := h.vaultCall(ctx, call, method, path, &url.URL{Path: "/v1/" + path}, body, &out); fail != nil {
		return "", time.Time{}, fail
	}
	sealed, _ := out.Data[egress.FieldSealed].(string)
	until, _ := out.Data["use_until"].(string)
	useUntil, err := time.Parse(time.RFC3339Nano, until)
	if sealed == "" || err != nil {
		return "", time.Time{}, &egress.Error{Status: http.StatusBadGateway, Msg: "the engine's answer holds no sealed injection"}
	}
	return sealed, useUntil, nil
}

// checkCapability asks Vault whether the token may update the call's path,
// in a check it may share with the token's other calls of the moment
// (broker_checks.go).
func (h *brokerHandler) checkCapability(ctx context.Context, call *edgeCall, method, path string) *egress.Error {
	return h.decide(ctx, h.checks.start(call.token, path), call, method)
}

// decide waits for a check started before and maps its answer.
func (h *brokerHandler) decide(ctx context.Context, decided func(context.Context) ([]string, checkFail), call *edgeCall, method string) *egress.Error {
	caps, fail := decided(ctx)
	switch {
	case fail.err != nil:
		return fail.err
	case fail.status != 0:
		return vaultRefusal(fail.status, fail.errs, call, method)
	case slices.Contains(caps, "update") || slices.Contains(caps, "root"):
		return nil
	}
	return denied(call, method)
}

// vaultCall sends one request to Vault with the agent's token and maps its
// refusals to answers SDKs act on.
func (h *brokerHandler) vaultCall(ctx context.Context, call *edgeCall, method, path string, u *url.URL, body any, out any) *egress.Error {
	return h.vaultDo(ctx, call.token, http.MethodPost, u, body, out, func(status int, errs []string) *egress.Error {
		return vaultRefusal(status, errs, call, method)
	})
}

// vaultDo sends one request to Vault with token (body nil: none) and
// decodes a 200 answer into out; refusal maps any other status.
func (h *brokerHandler) vaultDo(ctx context.Context, token, httpMethod string, u *url.URL, body any, out any, refusal func(status int, errs []string) *egress.Error) *egress.Error {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return &egress.Error{Status: http.StatusInternalServerError, Msg: "encoding the Vault request failed"}
		}
	}
	var data []byte
	for attempt := 0; ; attempt++ {
		status, answer, errs, err := h.vaultOnce(ctx, token, httpMethod, u, raw)
		if err == nil && status == http.StatusOK {
			data = answer
			break
		}
		if neverRan(status, errs, err) {
			if attempt == 0 && sleepCtx(ctx, leaderRetryWait) {
				continue
			}
			h.logger.Warn("broker: vault has no active node", "status", status)
			if err != nil {
				return &egress.Error{Status: http.StatusServiceUnavailable, Msg: "Vault cannot be reached; try again shortly"}
			}
			return &egress.Error{Status: http.StatusServiceUnavailable, Msg: leaderChangeText}
		}
		if errors.Is(err, errUnsendable) {
			return &egress.Error{Status: http.StatusBadRequest, Permanent: true, Msg: "the path cannot be put into a Vault request"}
		}
		if errors.Is(err, errAnswerUnread) {
			return &egress.Error{Status: http.StatusServiceUnavailable, Msg: "reading Vault's answer failed; try again shortly"}
		}
		if err != nil {
			h.logger.Warn("broker: calling vault", "error", err)
			return &egress.Error{Status: http.StatusServiceUnavailable, Msg: "Vault cannot be reached; try again shortly"}
		}
		return refusal(status, errs)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &egress.Error{Status: http.StatusBadGateway, Msg: "Vault's answer could not be read"}
	}
	return nil
}

var (
	errUnsendable   = errors.New("the path cannot be put into a Vault request")
	errAnswerUnread = errors.New("reading Vault's answer failed")
)

// vaultOnce sends one request; errs are Vault's messages of a non-200
// answer, err a failure to get any answer.
func (h *brokerHandler) vaultOnce(ctx context.Context, token, httpMethod string, u *url.URL, raw []byte) (int, []byte, []string, error) {
	var reqBody io.Reader
	if raw != nil {
		reqBody = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, httpMethod, h.vaultAddr+u.EscapedPath(), reqBody)
	if err != nil {
		return 0, nil, nil, errUnsendable
	}
	req.Header.Set("X-Vault-Token", token)
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.vault.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%w: %v", errAnswerUnread, err)
	}
	var e struct {
		Errors []string `json:"errors"`
	}
	if resp.StatusCode != http.StatusOK {
		_ = json.Unmarshal(data, &e)
	}
	return resp.StatusCode, data, e.Errors, nil
}

func denied(call *edgeCall, method string) *egress.Error {
	return &egress.Error{Status: http.StatusForbidden, Permanent: true, Msg: fmt.Sprintf(
		"permission denied: this token may not call %s %s with credential %s", method, call.decoded, call.cred)}
}

// vaultRefusal maps a refusal from Vault to what the agent is told: 401
// for a token Vault does not know (expired, revoked), so that SDKs
// re-authenticate; 403 for a call the token may not make; the engine's
// own statuses and messages otherwise, without Vault's "N errors
// occurred" wrapper.
func vaultRefusal(status int, errs []string, call *edgeCall, method string) *egress.Error {
	msgs := unwrapVaultErrors(errs)
	msg := strings.Join(msgs, "; ")
	switch {
	case status == http.StatusForbidden && slices.Contains(msgs, "invalid token"):
		return unauthorized("the Vault token is invalid or expired: log in again (auth/approle/login)")
	case status == http.StatusForbidden && (msg == "" || msg == "permission denied"):
		return denied(call, method)
	case status == http.StatusForbidden:
		// The engine's own refusal (a credential created again after the
		// agent was given it) says what to do.
		return &egress.Error{Status: status, Msg: msg, Permanent: true}
	case status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests:
		if msg == "" {
			msg = "Vault is not ready"
		}
		return &egress.Error{Status: status, Msg: msg + "; try again shortly"}
	case status >= 500 && status != http.StatusBadGateway && status != http.StatusGatewayTimeout && status != http.StatusNotImplemented:
		return &egress.Error{Status: http.StatusBadGateway, Msg: "Vault failed; try again"}
	case msg == "":
		msg = http.StatusText(status)
	}
	// 400, 404, 413 and the engine's 504 cannot succeed when retried; its
	// 502s (a provider that did not answer) can.
	permanent := status < 500 || status == http.StatusGatewayTimeout || status == http.StatusNotImplemented
	return &egress.Error{Status: status, Msg: msg, Permanent: permanent}
}

// unwrapVaultErrors takes the messages out of Vault's multierror text
// ("1 error occurred:\n\t* permission denied\n\n").
func unwrapVaultErrors(errs []string) []string {
	var out []string
	for _, e := range errs {
		if !strings.Contains(e, "error occurred:") && !strings.Contains(e, "errors occurred:") {
			if e = strings.TrimSpace(e); e != "" {
				out = append(out, e)
			}
			continue
		}
		for _, line := range strings.Split(e, "\n") {
			if item, ok := strings.CutPrefix(strings.TrimSpace(line), "* "); ok && item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}
