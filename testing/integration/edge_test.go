package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicopt "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/coder/websocket"
	"github.com/google/go-github/v75/github"
	"github.com/hashicorp/vault/api"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/harness"
	"github.com/clankteam/credentials/testing/upstream"
)

// The broker edge: the portal's /broker streams between agent and service,
// and Vault carries only the authorization.

// edgeFixture is an org with credential key-a on a fake service, an agent
// allowed to use it whose Vault token the fake refuses to see, and a
// portal.
type edgeFixture struct {
	org, token, base string
	up               *upstream.Server
}

func newEdgeFixture(t *testing.T, name string, config map[string]interface{}) *edgeFixture {
	t.Helper()
	up := startFake(t)
	org := brokerOrg(t, name, up)
	if config != nil {
		admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
		write(t, admin, contract.Mount(org)+"/config", config)
	}
	token := newAgent(t, org, provision.AgentSpec{Name: "edge", Creds: []string{"key-a"}})
	up.SetForbidden(token)
	t.Cleanup(func() {
		if n := up.Violations(); n != 0 {
			t.Errorf("%d request(s) reached the service with the agent's Vault token", n)
		}
	})
	return &edgeFixture{org: org, token: token, base: startPortal(t), up: up}
}

func (f *edgeFixture) brokerURL(path string) string {
	return f.base + "/broker/" + f.org + "/key-a" + path
}

// eventTimes records when each streamed event arrived, from the start.
type eventTimes struct {
	start time.Time
	at    []time.Duration
}

func (e *eventTimes) mark() { e.at = append(e.at, time.Since(e.start)) }

// assertStreamed checks that n events arrived spread out as they were sent
// (gap apart), not together at the end. The bounds are generous: the
// machine is shared, and what matters is that the first event does not
// wait for the last.
func (e *eventTimes) assertStreamed(t *testing.T, n int, gap time.Duration) {
	t.Helper()
	if len(e.at) != n {
		t.Fatalf("%d events, want %d", len(e.at), n)
	}
	total := time.Duration(n-1) * gap
	first, last := e.at[0], e.at[n-1]
	if first > total/2 {
		t.Errorf("first event after %s, the whole answer takes %s: not streamed", first, total)
	}
	if spread := last - first; spread < total/2 {
		t.Errorf("events arrived within %s of each other, sent over %s: buffered", spread, total)
	}
	t.Logf("first event after %s, last after %s", first, last)
}

func TestEdgeStreamsOpenAIChatCompletions(t *testing.T) {
	f := newEdgeFixture(t, "edge-openai", nil)
	client := openai.NewClient(option.WithBaseURL(f.brokerURL("/v1/")), option.WithAPIKey(f.token), option.WithMaxRetries(0))
	const n, gap = 8, 150 * time.Millisecond
	ev := &eventTimes{start: time.Now()}
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model:    "fake-model-1",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
	}, option.WithQuery("events", fmt.Sprint(n)), option.WithQuery("gap_ms", fmt.Sprint(gap.Milliseconds())))
	var text strings.Builder
	for stream.Next() {
		chunk := stream.Current()
		if len(chunk.Choices) > 0 {
			ev.mark()
			text.WriteString(chunk.Choices[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(text.String(), "tok0 tok1 ") {
		t.Errorf("text = %q", text.String())
	}
	ev.assertStreamed(t, n, gap)
}

func TestEdgeStreamsAnthropicMessages(t *testing.T) {
	f := newEdgeFixture(t, "edge-anthropic", nil)
	client := anthropic.NewClient(anthropicopt.WithBaseURL(f.brokerURL("/")), anthropicopt.WithAPIKey(f.token), anthropicopt.WithMaxRetries(0))
	const n, gap = 8, 150 * time.Millisecond
	ev := &eventTimes{start: time.Now()}
	stream := client.Messages.NewStreaming(context.Background(), anthropic.MessageNewParams{
		Model:     "fake-model-1",
		MaxTokens: 64,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello"))},
	}, anthropicopt.WithQuery("events", fmt.Sprint(n)), anthropicopt.WithQuery("gap_ms", fmt.Sprint(gap.Milliseconds())))
	var text strings.Builder
	for stream.Next() {
		if d, ok := stream.Current().AsAny().(anthropic.ContentBlockDeltaEvent); ok {
			ev.mark()
			text.WriteString(d.Delta.Text)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(text.String(), "tok0 tok1 ") {
		t.Errorf("text = %q", text.String())
	}
	ev.assertStreamed(t, n, gap)

	// The SDK shows the broker's refusal as its own error, with the message.
	bad := anthropic.NewClient(anthropicopt.WithBaseURL(f.brokerURL("/")), anthropicopt.WithAPIKey("hvs.not-a-real-token-000000000000"), anthropicopt.WithMaxRetries(0))
	_, err := bad.Messages.New(context.Background(), anthropic.MessageNewParams{
		Model: "fake-model-1", MaxTokens: 8,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || !strings.Contains(err.Error(), "invalid or expired") {
		t.Errorf("bad token: %v", err)
	}
}

// TestEdgeLargeBodies: 50 MB down and 20 MB up, bytes identical, through
// the edge; neither fits through a Vault request.
func TestEdgeLargeBodies(t *testing.T) {
	f := newEdgeFixture(t, "edge-large", map[string]interface{}{"broker_max_body": 64 << 20})
	const down = 50_000_000
	req, _ := http.NewRequest(http.MethodGet, f.brokerURL("/bytes?n="+fmt.Sprint(down)), nil)
	req.Header.Set("Authorization", "Bearer "+f.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	bad := int64(-1)
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		for i := 0; i < n; i++ {
			if bad < 0 && buf[i] != upstream.PatternByte(got+int64(i)) {
				bad = got + int64(i)
			}
		}
		got += int64(n)
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || got != down || bad >= 0 {
		t.Fatalf("download: status %d, %d bytes, first wrong byte at %d", resp.StatusCode, got, bad)
	}

	const up = 20_000_000
	body := make([]byte, up)
	for i := range body {
		body[i] = upstream.PatternByte(int64(i))
	}
	sum := sha256.Sum256(body)
	req, _ = http.NewRequest(http.MethodPost, f.brokerURL("/upload"), bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var echo struct {
		Bytes  int
		SHA256 string
	}
	_ = json.NewDecoder(resp.Body).Decode(&echo)
	resp.Body.Close()
	if resp.StatusCode != 200 || echo.Bytes != up || echo.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("upload: status %d, the service got %d bytes (sha256 match %v)", resp.StatusCode, echo.Bytes, echo.SHA256 == hex.EncodeToString(sum[:]))
	}
}

// TestEdgeOutlastsVaultRequestLimit: with Vault's max request duration at
// 3s, a service that takes 5s answers through the edge (broker_timeout is
// the edge's only bound), while the Vault path cannot carry the call.
func TestEdgeOutlastsVaultRequestLimit(t *testing.T) {
	v, err := harness.Start(context.Background(), harness.Options{Config: `default_max_request_duration = "3s"`})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Stop() })
	ctx := context.Background()
	up := startFake(t)
	org := "edge-slow"
	if err := v.CreateOrg(ctx, org); err != nil {
		t.Fatal(err)
	}
	root := v.Client()
	mount := contract.Mount(org)
	write(t, root, mount+"/services/local", map[string]interface{}{"types": "api_key", "base_urls": up.URL})
	write(t, root, mount+"/creds/key-a", map[string]interface{}{"type": "api_key", "service": "local", "api_key": brokerKeyA})
	login, err := provision.CreateAgent(ctx, root, org, provision.AgentSpec{Name: "slow", Creds: []string{"key-a"}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := v.ClientWithToken("").Logical().Write("auth/approle/login", map[string]interface{}{"role_id": login.RoleID, "secret_id": login.SecretID})
	if err != nil {
		t.Fatal(err)
	}
	token := s.Auth.ClientToken
	srv := servePortal(t, portal.Config{VaultAddr: v.Addr, EdgeKey: v.PortalEdgeKey()})

	start := time.Now()
	status, _, body := viaPortal(t, srv.URL(), token, http.MethodGet, "/broker/"+org+"/key-a/slow?ms=5000", nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"slept_ms":5000`) {
		t.Fatalf("through the edge after %s: %d %.200s", time.Since(start), status, body)
	}
	_, err = v.ClientWithToken(token).Logical().Write(mount+"/proxy/key-a", map[string]interface{}{"method": "GET", "path": "/slow?ms=5000"})
	if err == nil {
		t.Fatalf("the Vault path carried a call longer than Vault's request limit")
	}
}

// TestEdgePagingStaysOnTheBroker: go-github follows the Link header's
// next page through the broker, and no request reaches the service with
// the agent's Vault token.
func TestEdgePagingStaysOnTheBroker(t *testing.T) {
	f := newEdgeFixture(t, "edge-paging", nil)
	gh, err := github.NewClient(nil).WithAuthToken(f.token).WithEnterpriseURLs(f.brokerURL("/"), f.brokerURL("/"))
	if err != nil {
		t.Fatal(err)
	}
	// WithEnterpriseURLs appends /api/v3/; talk to the broker root instead.
	gh.BaseURL, _ = gh.BaseURL.Parse(f.brokerURL("/"))
	opt := &github.IssueListByRepoOptions{}
	var titles []string
	pages := 0
	for {
		issues, resp, err := gh.Issues.ListByRepo(context.Background(), "o", "r", opt)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, is := range issues {
			titles = append(titles, is.GetTitle())
		}
		if resp.NextPage == 0 || pages > 5 {
			break
		}
		opt.ListOptions.Page = resp.NextPage
	}
	if pages != 3 || len(titles) != 6 {
		t.Fatalf("%d pages, %d issues", pages, len(titles))
	}
	// The Link header itself names the broker, for clients that follow it
	// as a URL (Octokit).
	_, headers, _ := viaPortal(t, f.base, f.token, http.MethodGet, "/broker/"+f.org+"/key-a/repos/o/r/issues?page=2", nil)
	link := headers.Get("Link")
	if !strings.Contains(link, f.base+"/broker/"+f.org+"/key-a/repos/o/r/issues?page=3") || strings.Contains(link, f.up.URL) {
		t.Errorf("Link = %s", link)
	}
}

// TestEdgeScrubsEveryForm: what the service echoes comes back without the
// secret in any form, gzip included whatever its label says.
func TestEdgeScrubsEveryForm(t *testing.T) {
	f := newEdgeFixture(t, "edge-scrub", nil)
	for _, p := range []string{"/echo", "/gzip", "/gzip?label=two-lines", "/gzip?label=list"} {
		status, headers, body := viaPortal(t, f.base, f.token, http.MethodPost, "/broker/"+f.org+"/key-a"+p, []byte(`{"a":1}`))
		all := string(body) + fmt.Sprint(headers)
		if status != http.StatusOK || leaks(all, brokerKeyA) {
			t.Errorf("%s: %d, secret came back: %v", p, status, leaks(all, brokerKeyA))
		}
	}
}

// leaks looks for secret in text in the forms an echo takes.
func leaks(text, secret string) bool {
	for _, form := range []string{secret, base64.StdEncoding.EncodeToString([]byte(secret)), hex.EncodeToString([]byte(secret)),
		strings.ReplaceAll(secret, "_", `\u005f`)} {
		if strings.Contains(text, form) {
			return true
		}
	}
	return false
}

// TestSealedModeGivesAgentsOnlyCiphertext: an agent that asks the engine
// for the sealed injection itself learns nothing it could use.
func TestSealedModeGivesAgentsOnlyCiphertext(t *testing.T) {
	f := newEdgeFixture(t, "edge-sealed", nil)
	c := vault.ClientWithToken(f.token)
	s, err := c.Logical().Write(contract.Mount(f.org)+"/proxy/key-a/GET/v1/balance", map[string]interface{}{"edge_key": vault.PortalEdgeKey().ID})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(s)
	if leaks(string(raw), brokerKeyA) || s.Data["sealed_injection"] == "" {
		t.Fatalf("sealed answer: leaked %v", leaks(string(raw), brokerKeyA))
	}
	if _, ok := s.Data["status"]; ok {
		t.Errorf("sealed mode called the service: %v", s.Data)
	}
	if len(f.up.Requests()) != 0 {
		t.Errorf("sealed mode reached the service")
	}
	// A key the operator did not configure gets nothing.
	_, err = c.Logical().Write(contract.Mount(f.org)+"/proxy/key-a/GET/v1/balance", map[string]interface{}{"edge_key": "0123456789ab"})
	assertStatus(t, err, http.StatusBadRequest, "not one the operator configured")
	// The Vault path answers text bodies as text for the CLI.
	s, err = c.Logical().Write(contract.Mount(f.org)+"/proxy/key-a/GET/v1/balance", nil)
	if err != nil || !strings.Contains(fmt.Sprint(s.Data["body_text"]), `"amount":4242`) {
		t.Errorf("body_text = %v (%v)", s.Data["body_text"], err)
	}
}

// fileAudit enables a file audit device at path name until the test ends
// and returns its file.
func fileAudit(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	root := vault.Client()
	if err := root.Sys().EnableAuditWithOptionsWithContext(ctx, name, &api.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": auditLog, "log_raw": "false"},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = root.Sys().DisableAuditWithContext(ctx, name) })
	return auditLog
}

// syncBuffer is a log sink safe for the portal's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestEdgeCanary plants a secret, uses it every way an agent can (the
// edge, cached and not; the Vault path; sealed mode), and searches every
// answer, the portal's log, Vault's log and a file audit log for it in
// any form. Each edge call is in the audit log.
func TestEdgeCanary(t *testing.T) {
	const canary = "sk_live_CANARY_edge_4b7c9d1e2f3a5b6c"
	up, err := upstream.Start(upstream.Options{Key: canary, Record: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	org := newOrg(t, "edge-canary")
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	mount := contract.Mount(org)
	write(t, admin, mount+"/services/local", map[string]interface{}{"types": "api_key", "base_urls": up.URL})
	write(t, admin, mount+"/creds/key", map[string]interface{}{"type": "api_key", "service": "local", "api_key": canary})
	token := newAgent(t, org, provision.AgentSpec{Name: "canary", Creds: []string{"key"}})
	up.SetForbidden(token)

	auditLog := fileAudit(t, "edge-audit")

	logs := &syncBuffer{}
	srv := servePortal(t, portal.Config{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})

	var seen strings.Builder
	for _, p := range []string{"/echo?a=1", "/echo?a=2", "/gzip?label=two-lines", "/v1/balance"} {
		status, h, body := viaPortal(t, srv.URL(), token, http.MethodPost, "/broker/"+org+"/key"+p, []byte(`{"x":1}`))
		if status != http.StatusOK {
			t.Fatalf("%s: %d %.200s", p, status, body)
		}
		fmt.Fprint(&seen, h, string(body))
	}
	for _, data := range []map[string]interface{}{nil, {"edge_key": vault.PortalEdgeKey().ID}} {
		s, err := vault.ClientWithToken(token).Logical().Write(mount+"/proxy/key/POST/echo", data)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(s)
		seen.Write(raw)
	}
	vaultLog, _ := vault.ReadLog()
	audit, _ := os.ReadFile(auditLog)
	for where, text := range map[string]string{
		"answers": seen.String(), "portal log": logs.String(), "vault log": string(vaultLog), "audit log": string(audit),
	} {
		if leaks(text, canary) {
			t.Errorf("the secret shows in the %s", where)
		}
	}
	if n := strings.Count(string(audit), "sys/capabilities-self"); n < 2 {
		t.Errorf("the audit log holds %d capabilities-self checks for the edge's cached calls", n)
	}
	if !strings.Contains(string(audit), mount+"/proxy/key/POST/echo") {
		t.Errorf("the audit log does not show the call's proxy path")
	}
	if len(up.Requests()) != 5 {
		t.Errorf("the service saw %d calls, want 5", len(up.Requests()))
	}
}

// TestEdgeWebSocket: a WebSocket on /broker/, the agent's token in
// Authorization as for any call: authorized by Vault, the key injected,
// the service's frames scrubbed. A revoked token's upgrade is refused
// before the service sees it.
func TestEdgeWebSocket(t *testing.T) {
	org := newOrg(t, "edge-ws")
	const key = "sk-edge-ws-canary-7e6d5c4b3a29"
	svc := startWebSocketService(t, org, key)
	srv := servePortal(t, portal.Config{OutboundRoots: vault.CA.Pool()})
	token := newAgent(t, org, provision.AgentSpec{Name: "streamer", Creds: []string{"ws-key"}})
	u := "ws" + strings.TrimPrefix(srv.URL(), "http") + "/broker/" + org + "/ws-key/v1/stream"
	header := http.Header{"Authorization": {"Bearer " + token}}
	svc.exchange(t, u, &websocket.DialOptions{HTTPHeader: header})

	write(t, vault.Client(), "auth/token/revoke", map[string]interface{}{"token": token})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: header})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a revoked token's upgrade: %v %v", err, resp)
	}
	if n := svc.upgraded.Load(); n != 1 {
		t.Errorf("%d upgrades reached the service, want the first alone", n)
	}
}
