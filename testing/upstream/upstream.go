// Package upstream is a fake of the services agents call through the broker
// (Stripe, OpenAI and a generic API), for tests and the benchmark. It checks
// the credential each request carries, records every request, and has
// endpoints that misbehave on purpose: echoing the credential back,
// redirecting elsewhere, answering too much, too slowly, or compressed.
//
// It listens on 127.0.0.1 only and never logs what it receives.
package upstream

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a fake. Zero values give an open fake on a free port.
type Options struct {
	// Addr to listen on; default 127.0.0.1:0.
	Addr string
	// Key is the API key or access token the fake accepts: as a bearer
	// token, in X-Api-Key, as the basic-auth user name, or as the "key"
	// query parameter. Empty accepts any request.
	Key string
	// User and Password, when set, are also accepted as HTTP basic auth.
	User, Password string
	// Forbidden values must never reach the fake (a Vault token, say): a
	// request carrying one anywhere is refused and counted as a violation.
	Forbidden []string
	// Record keeps every request for Requests; off for benchmarks.
	Record bool
	// TLS, when set, serves HTTPS (HTTP/2 and HTTP/1.1) with it; URL is
	// then https://.
	TLS *tls.Config
	// Delay holds each answer back this long (to see how many calls a
	// client makes at once).
	Delay time.Duration
}

// Request is what the fake received.
type Request struct {
	Method   string
	Path     string
	RawQuery string
	Header   http.Header
	Body     []byte
	// Authorized says whether it carried the expected credential.
	Authorized bool
}

// Server is a running fake.
type Server struct {
	// URL is the fake's base address, http://127.0.0.1:<port>.
	URL string

	opts Options
	srv  *http.Server
	ln   net.Listener

	// mu guards requests and violations.
	mu         sync.Mutex
	requests   []Request
	violations int

	inFlight, peak atomic.Int64
}

// PeakConcurrent is the most requests the fake has served at once.
func (s *Server) PeakConcurrent() int { return int(s.peak.Load()) }

// Start runs a fake until Close.
func Start(opts Options) (*Server, error) {
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "http://" + ln.Addr().String(), opts: opts, ln: ln}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	if opts.TLS != nil {
		cfg := opts.TLS.Clone()
		cfg.NextProtos = []string{"h2", "http/1.1"}
		s.srv.TLSConfig = cfg
		s.URL = "https://" + ln.Addr().String()
		go func() { _ = s.srv.ServeTLS(ln, "", "") }()
		return s, nil
	}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the fake.
func (s *Server) Close() { _ = s.srv.Close() }

// Requests returns the requests received so far (with Record set).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Violations counts requests that carried a Forbidden value.
func (s *Server) Violations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.violations
}

// SetForbidden replaces the values that must never reach the fake, for
// values known only after it started (a Vault token issued later).
func (s *Server) SetForbidden(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Forbidden = append([]string(nil), values...)
}

// Reset forgets the requests and violations seen so far.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests, s.violations = nil, 0
}

// ServeHTTP records the request, refuses forbidden values and dispatches.
// Long on purpose: one case per fake endpoint family.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for p := s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
	}
	if s.opts.Delay > 0 {
		time.Sleep(s.opts.Delay)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 200<<20))
	if err != nil {
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	authorized := s.authorized(r)
	s.mu.Lock()
	forbidden := s.carriesForbidden(r, body)
	if forbidden {
		s.violations++
	}
	if s.opts.Record {
		s.requests = append(s.requests, Request{
			Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
			Header: r.Header.Clone(), Body: body, Authorized: authorized,
		})
	}
	s.mu.Unlock()
	if forbidden {
		writeError(w, http.StatusBadRequest, "a forbidden value (a Vault token?) reached the upstream")
		return
	}

	switch p := r.URL.Path; {
	case p == "/v1/ping":
		if !s.requireAuth(w, authorized) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	case p == "/v1/balance":
		if !s.requireAuth(w, authorized) {
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"object":    "balance",
			"livemode":  false,
			"available": []any{map[string]any{"amount": 4242, "currency": "usd", "source_types": map[string]any{"card": 4242}}},
			"pending":   []any{map[string]any{"amount": 0, "currency": "usd"}},
		})
	case p == "/v1/models":
		if !s.requireAuth(w, authorized) {
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"object": "list",
			"data":   []any{map[string]any{"id": "fake-model-1", "object": "model", "created": 1700000000, "owned_by": "upstream"}},
		})
	case strings.HasPrefix(p, "/echo") || strings.HasPrefix(p, "/api/"):
		s.echo(w, r, body, authorized)
	case p == "/redirect":
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		if code < 300 || code > 399 {
			code = http.StatusFound
		}
		w.Header().Set("Location", r.URL.Query().Get("to"))
		w.WriteHeader(code)
	case p == "/bytes":
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Type", "application/octet-stream")
		if r.URL.Query().Get("chunked") == "" {
			w.Header().Set("Content-Length", strconv.Itoa(max(n, 0)))
		}
		WritePattern(w, int64(max(n, 0)))
	case p == "/upload":
		sum := sha256.Sum256(body)
		writeJSON(w, http.StatusOK, map[string]any{"bytes": len(body), "sha256": hex.EncodeToString(sum[:])})
	case p == "/v1/chat/completions" || p == "/v1/messages":
		if !s.requireAuth(w, authorized) {
			return
		}
		s.streamEvents(w, r, p == "/v1/messages")
	case strings.HasPrefix(p, "/repos/"):
		s.pagedIssues(w, r)
	case p == "/slow":
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"slept_ms": ms})
	case p == "/status":
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		if code < 200 || code > 599 {
			code = http.StatusTeapot
		}
		writeJSON(w, code, map[string]any{"status": code})
	case p == "/gzip":
		s.gzipEcho(w, r)
	case p == "/brotli":
		// Claims an encoding the broker cannot decode.
		w.Header().Set("Content-Encoding", "br")
		_, _ = w.Write([]byte(r.Header.Get("Authorization")))
	default:
		writeError(w, http.StatusNotFound, "no such endpoint: "+p)
	}
}

// echo answers with everything the request carried, credential included:
// in the body as is, URL-encoded and base64-encoded, and in headers.
func (s *Server) echo(w http.ResponseWriter, r *http.Request, body []byte, authorized bool) {
	auth := r.Header.Get("Authorization")
	w.Header().Set("X-Echo-Authorization", auth)
	w.Header().Set("X-Echo-Api-Key", r.Header.Get("X-Api-Key"))
	w.Header().Set("X-Echo-Query", r.URL.RawQuery)
	writeJSON(w, http.StatusOK, map[string]any{
		"method":        r.Method,
		"path":          r.URL.Path,
		"raw_path":      r.URL.EscapedPath(),
		"query":         r.URL.RawQuery,
		"headers":       r.Header,
		"body":          string(body),
		"authorized":    authorized,
		"auth_base64":   base64.StdEncoding.EncodeToString([]byte(auth)),
		"auth_in_text":  "token was " + strings.TrimPrefix(auth, "Bearer ") + ", ok",
		"key_in_base64": base64.StdEncoding.EncodeToString([]byte("key=" + s.opts.Key + ";")),
	})
}

func (s *Server) gzipEcho(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		_, _ = w.Write([]byte("echo: " + r.Header.Get("Authorization")))
		return
	}
	switch r.URL.Query().Get("label") {
	case "two-lines":
		// A first line that says identity hides the gzip from a reader
		// that looks at one line only.
		w.Header()["Content-Encoding"] = []string{"identity", "gzip"}
	case "list":
		w.Header().Set("Content-Encoding", "identity, gzip")
	default:
		w.Header().Set("Content-Encoding", "gzip")
	}
	zw := gzip.NewWriter(w)
	_, _ = zw.Write([]byte("echo: " + r.Header.Get("Authorization")))
	_ = zw.Close()
}

func (s *Server) requireAuth(w http.ResponseWriter, authorized bool) bool {
	if !authorized {
		writeError(w, http.StatusUnauthorized, "Invalid API Key provided")
	}
	return authorized
}

// authorized says whether r carries the expected credential in one of the
// places services take it.
func (s *Server) authorized(r *http.Request) bool {
	k := s.opts.Key
	if k == "" && s.opts.User == "" {
		return true
	}
	if user, pass, ok := r.BasicAuth(); ok {
		if s.opts.User != "" && user == s.opts.User && pass == s.opts.Password {
			return true
		}
		if k != "" && user == k {
			return true
		}
	}
	if k == "" {
		return false
	}
	return r.Header.Get("Authorization") == "Bearer "+k ||
		r.Header.Get("X-Api-Key") == k ||
		r.URL.Query().Get("key") == k
}

// carriesForbidden is called with mu held.
func (s *Server) carriesForbidden(r *http.Request, body []byte) bool {
	for _, f := range s.opts.Forbidden {
		if f == "" {
			continue
		}
		if strings.Contains(r.URL.RawQuery, f) || strings.Contains(r.URL.Path, f) || bytes.Contains(body, []byte(f)) {
			return true
		}
		for _, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, f) {
					return true
				}
				// The value may sit in basic auth.
				if raw, ok := strings.CutPrefix(v, "Basic "); ok {
					if dec, err := base64.StdEncoding.DecodeString(raw); err == nil && bytes.Contains(dec, []byte(f)) {
						return true
					}
				}
			}
		}
	}
	return false
}

// writeError answers in the error shape Stripe and OpenAI share, which
// their SDKs parse.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"type": "invalid_request_error", "message": msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encoding", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// PatternByte is byte i of what /bytes sends, so a test can check a large
// download without keeping a copy.
func PatternByte(i int64) byte { return byte(i*7 + i>>11) }

// WritePattern writes n pattern bytes in 32 KiB writes.
func WritePattern(w io.Writer, n int64) {
	buf := make([]byte, 32<<10)
	for off := int64(0); off < n; {
		k := min(int64(len(buf)), n-off)
		for i := int64(0); i < k; i++ {
			buf[i] = PatternByte(off + i)
		}
		if _, err := w.Write(buf[:k]); err != nil {
			return
		}
		off += k
	}
}

// streamEvents answers a chat completion (OpenAI) or a message
// (Anthropic) as server-sent events: ?events=N (default 5) text deltas,
// ?gap_ms apart (default 100), each flushed as it is written, the way a
// model streams its answer.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, anthropic bool) {
	n, _ := strconv.Atoi(r.URL.Query().Get("events"))
	if n <= 0 {
		n = 5
	}
	// ?stream=false: one JSON answer with its usage, as both APIs answer
	// without streaming; ?usage=1 adds OpenAI's include_usage chunk.
	if r.URL.Query().Get("stream") == "false" {
		if anthropic {
			writeJSON(w, http.StatusOK, map[string]any{"id": "msg_1", "type": "message", "model": "fake-model-1",
				"content": []any{map[string]any{"type": "text", "text": "hello"}}, "usage": map[string]any{"input_tokens": 1000, "output_tokens": n * 100}})
		} else {
			writeJSON(w, http.StatusOK, map[string]any{"id": "c1", "object": "chat.completion", "model": "fake-model-1",
				"choices": []any{}, "usage": map[string]any{"prompt_tokens": 1000, "completion_tokens": n * 100, "total_tokens": 1000 + n*100}})
		}
		return
	}
	gap := 100 * time.Millisecond
	if ms, err := strconv.Atoi(r.URL.Query().Get("gap_ms")); err == nil {
		gap = time.Duration(ms) * time.Millisecond
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(event, data string) {
		if event != "" {
			_, _ = io.WriteString(w, "event: "+event+"\n")
		}
		_, _ = io.WriteString(w, "data: "+data+"\n\n")
		_ = rc.Flush()
	}
	if anthropic {
		send("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"fake-model-1","content":[],"stop_reason":null,"usage":{"input_tokens":1,"output_tokens":0}}}`)
		send("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
	}
	for i := 0; i < n; i++ {
		if i > 0 {
			select {
			case <-time.After(gap):
			case <-r.Context().Done():
				return
			}
		}
		word := "tok" + strconv.Itoa(i) + " "
		if anthropic {
			send("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`+word+`"}}`)
		} else {
			send("", `{"id":"c1","object":"chat.completion.chunk","created":1700000000,"model":"fake-model-1","choices":[{"index":0,"delta":{"content":"`+word+`"},"finish_reason":null}]}`)
		}
	}
	if anthropic {
		send("content_block_stop", `{"type":"content_block_stop","index":0}`)
		send("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":`+strconv.Itoa(n)+`}}`)
		send("message_stop", `{"type":"message_stop"}`)
	} else {
		if r.URL.Query().Get("usage") == "1" {
			send("", `{"id":"c1","object":"chat.completion.chunk","model":"fake-model-1","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":`+strconv.Itoa(n*100)+`}}`)
		}
		send("", "[DONE]")
	}
}

// pagedIssues is GitHub's issue list: ?page=N of 3 pages, two issues
// each, with a Link header pointing at the fake's own origin, as GitHub's
// points at api.github.com.
func (s *Server) pagedIssues(w http.ResponseWriter, r *http.Request) {
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	if page < 1 {
		page = 1
	}
	const pages = 3
	link := func(p int, rel string) string {
		return "<" + s.URL + r.URL.Path + "?page=" + strconv.Itoa(p) + `>; rel="` + rel + `"`
	}
	var links []string
	if page < pages {
		links = append(links, link(page+1, "next"), link(pages, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"), link(page-1, "prev"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	var issues []any
	for i := 1; i <= 2; i++ {
		n := (page-1)*2 + i
		issues = append(issues, map[string]any{"id": n, "number": n, "title": "issue " + strconv.Itoa(n), "state": "open"})
	}
	writeJSON(w, http.StatusOK, issues)
}
