package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/smtpserver"
)

// Agents through MCP: the portal's /mcp/<org> lists the credentials an
// agent's token may use as tools and calls them through the edge, and the
// SMTP credential sends mail, all without the agent holding a secret.

const mcpSMTPPassword = "smtp-INTEGRATION-pw-5521"

// transcript records every byte an MCP client sends and receives.
type transcript struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	token string
}

func (tr *transcript) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if tr.token != "" {
		req.Header.Set("Authorization", "Bearer "+tr.token)
	}
	if req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		tr.write(b)
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tr.write(b)
	for k, vs := range resp.Header {
		tr.write([]byte(k + ": " + strings.Join(vs, ",")))
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

func (tr *transcript) write(b []byte) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.buf.Write(b)
	tr.buf.WriteByte('\n')
}

func (tr *transcript) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.buf.String()
}

// mcpSession connects an MCP client (the official go-sdk) to the portal.
func mcpSession(t *testing.T, endpoint string, tr *transcript) (*mcp.ClientSession, error) {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "integration-agent", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: &http.Client{Transport: tr}}, nil)
}

// toolNamesOf lists a session's tool names, sorted.
func toolNamesOf(t *testing.T, s *mcp.ClientSession) []string {
	t.Helper()
	tools, err := s.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	sort.Strings(names)
	return names
}

func toolText(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// mcpOrg is an org with key-a and key-b on a fake service, an OAuth
// credential not connected yet, an SMTP credential on a test server, an
// agent given key-a, the OAuth credential and the mailer, and another
// agent given key-b.
type mcpOrg struct {
	org, token, otherToken, base string
	smtp                         *smtpserver.Server
}

func newMCPOrg(t *testing.T, name string) *mcpOrg {
	t.Helper()
	up := startFake(t)
	org := brokerOrg(t, name, up)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	mount := contract.Mount(org)

	serverTLS, err := vault.CA.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	smtp, err := smtpserver.Start(smtpserver.Options{Username: "bot@acme.example", Password: mcpSMTPPassword, TLS: serverTLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { smtp.Close() })
	write(t, admin, mount+"/creds/mailer", map[string]interface{}{
		"type": "password", "service": "smtp", "username": "bot@acme.example", "password": mcpSMTPPassword,
		"host": smtp.Host, "port": smtp.Port, "allowed_senders": "@acme.example",
	})
	write(t, admin, mount+"/services/idp", map[string]interface{}{
		"types": "oauth2", "base_urls": up.URL, "description": "The org's identity provider.",
		"oauth": map[string]interface{}{"auth_url": up.URL + "/authorize", "token_url": up.URL + "/token"},
	})
	write(t, admin, mount+"/apps/idp-app", map[string]interface{}{"service": "idp", "client_id": "c", "client_secret": "s"})
	write(t, admin, mount+"/creds/calendar", map[string]interface{}{"type": "oauth2", "service": "idp", "app": "idp-app"})

	token := newAgent(t, org, provision.AgentSpec{Name: "assistant", Creds: []string{"key-a", "calendar", "mailer"}})
	other := newAgent(t, org, provision.AgentSpec{Name: "other", Creds: []string{"key-b"}})
	up.SetForbidden(token)
	return &mcpOrg{org: org, token: token, otherToken: other, base: startPortal(t), smtp: smtp}
}

// Long on purpose: one story told in order, whose steps depend on the ones before.
func TestMCPAgentUsesItsCredentials(t *testing.T) {
	f := newMCPOrg(t, "mcp-tools")
	tr := &transcript{token: f.token}
	s, err := mcpSession(t, f.base+"/mcp/"+f.org, tr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()

	tools, err := s.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
		if tool.Name == "key-a" && !strings.Contains(tool.Description, "Paths are relative to http://127.0.0.1") {
			t.Errorf("key-a's description does not say its base URL: %q", tool.Description)
		}
	}
	sort.Strings(names)
	if fmt.Sprint(names) != "[calendar key-a list_credentials send_email]" {
		t.Fatalf("tools %v: want the agent's three credentials and list_credentials, not another agent's", names)
	}

	// An HTTP credential's tool: the service sees the key, the agent not.
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "key-a", Arguments: map[string]any{"method": "GET", "path": "/v1/balance"}})
	if err != nil {
		t.Fatal(err)
	}
	text := toolText(t, res)
	var answer struct {
		Status int `json:"status"`
		Body   struct {
			Object string `json:"object"`
		} `json:"body"`
	}
	if res.IsError || json.Unmarshal([]byte(text), &answer) != nil || answer.Status != 200 || answer.Body.Object != "balance" {
		t.Fatalf("key-a GET /v1/balance: error=%v %s", res.IsError, text)
	}

	// list_credentials: status and where a person fixes it.
	res, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "list_credentials", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	text = toolText(t, res)
	for _, want := range []string{`"name":"calendar"`, `"status":"needs_attention"`, `"status_reason":"not connected yet"`, `/orgs/` + f.org + `/creds/calendar`, `"tool":"send_email"`} {
		if !strings.Contains(text, want) {
			t.Errorf("list_credentials lacks %s: %s", want, text)
		}
	}
	if strings.Contains(text, "key-b") {
		t.Error("list_credentials shows another agent's credential")
	}

	// A credential not connected yet: a clear error with the portal page.
	res, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "calendar", Arguments: map[string]any{"path": "/v1/events"}})
	if err != nil {
		t.Fatal(err)
	}
	text = toolText(t, res)
	if !res.IsError || !strings.Contains(text, "not connected yet") || !strings.Contains(text, f.base+"/orgs/"+f.org+"/creds/calendar") {
		t.Fatalf("calendar: error=%v %s", res.IsError, text)
	}

	// send_email: the message arrives with its headers.
	res, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "send_email", Arguments: map[string]any{
		"from": "Assistant <assistant@acme.example>", "to": []string{"oncall@acme.example"}, "subject": "Balance", "text": "4242 usd available.",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError || !strings.Contains(toolText(t, res), `"recipients":1`) {
		t.Fatalf("send_email: %s", toolText(t, res))
	}
	msgs := f.smtp.Messages()
	if len(msgs) != 1 {
		t.Fatalf("the SMTP server got %d messages, want 1", len(msgs))
	}
	m, err := mail.ReadMessage(bytes.NewReader(msgs[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("From") != `"Assistant" <assistant@acme.example>` || m.Header.Get("To") != "<oncall@acme.example>" || m.Header.Get("Subject") != "Balance" {
		t.Errorf("headers: %v", m.Header)
	}
	// A sender outside allowed_senders is refused by the engine.
	res, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "send_email", Arguments: map[string]any{
		"from": "x@elsewhere.example", "to": []string{"oncall@acme.example"}, "subject": "s", "text": "t",
	}})
	if err != nil || !res.IsError || !strings.Contains(toolText(t, res), "allowed_senders") {
		t.Fatalf("send_email from another domain: %v %s", err, toolText(t, res))
	}

	for _, secret := range []string{brokerKeyA, brokerKeyB, mcpSMTPPassword} {
		if strings.Contains(tr.String(), secret) {
			t.Fatalf("the MCP transcript holds a secret")
		}
	}

	// Each tool call was authorized by Vault and recorded as a use.
	admin := vault.ClientWithToken(tokenFor(t, f.org, provision.RoleAdmin))
	for _, cred := range []string{"key-a", "mailer"} {
		sec, err := admin.Logical().Read(contract.Mount(f.org) + "/creds/" + cred)
		if err != nil || sec == nil || sec.Data["last_used_at"] == nil || sec.Data["last_used_at"] == "" {
			t.Errorf("%s: no last use recorded: %v %v", cred, err, sec)
		}
	}
}

func TestMCPRefusesOtherTokens(t *testing.T) {
	f := newMCPOrg(t, "mcp-refuse")
	other := newMCPOrg(t, "mcp-refuse-b")
	endpoint := f.base + "/mcp/" + f.org

	post := func(token string) (int, http.Header, string) {
		req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}

	status, h, body := post("")
	if status != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("no token: %d %q %s", status, h.Get("WWW-Authenticate"), body)
	}
	status, h, body = post("hvs.not-a-token")
	if status != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("unknown token: %d %s", status, body)
	}
	status, _, body = post(other.token)
	if status != http.StatusForbidden || !strings.Contains(body, "no credential of org "+f.org) {
		t.Errorf("another org's agent: %d %s", status, body)
	}

	// An expired token: an agent whose tokens live 2 seconds.
	short := newAgent(t, f.org, provision.AgentSpec{Name: "short", Creds: []string{"key-a"}, TokenTTL: 2 * time.Second})
	if status, _, body := post(short); status != http.StatusOK {
		t.Fatalf("a fresh token: %d %s", status, body)
	}
	time.Sleep(3 * time.Second)
	tr := &transcript{token: short}
	if _, err := mcpSession(t, endpoint, tr); err == nil {
		t.Error("an MCP client connected with an expired token")
	}
	if status, h, body := post(short); status != http.StatusUnauthorized || h.Get("WWW-Authenticate") == "" {
		t.Errorf("expired token: %d %s", status, body)
	}
}

func TestEdgeSendsMail(t *testing.T) {
	f := newMCPOrg(t, "edge-mail")
	status, _, body := viaPortal(t, f.base, f.token, http.MethodPost, "/broker/"+f.org+"/mailer/send",
		[]byte(`{"from": "ops@acme.example", "to": ["a@acme.example"], "cc": ["b@acme.example"], "subject": "Edge", "text": "sent through the edge"}`))
	if status != http.StatusOK || !strings.Contains(string(body), `"recipients":2`) {
		t.Fatalf("POST /send: %d %s", status, body)
	}
	if n := len(f.smtp.Messages()); n != 1 {
		t.Fatalf("the SMTP server got %d messages", n)
	}
	// The other agent was not given the mailer.
	status, _, body = viaPortal(t, f.base, f.otherToken, http.MethodPost, "/broker/"+f.org+"/mailer/send", []byte(`{"from": "ops@acme.example", "to": ["a@acme.example"], "text": "x"}`))
	if status != http.StatusForbidden {
		t.Fatalf("another agent's POST /send: %d %s", status, body)
	}
	status, _, body = viaPortal(t, f.base, f.token, http.MethodPost, "/broker/"+f.org+"/mailer/send", []byte(`not json`))
	if status != http.StatusBadRequest || !strings.Contains(string(body), "JSON object") {
		t.Fatalf("a message that is not JSON: %d %s", status, body)
	}
	if strings.Contains(string(body), mcpSMTPPassword) {
		t.Fatal("an answer holds the password")
	}
}

// TestMailCanary sends with an SMTP login every way an agent can (the
// Vault path, the edge's /send, MCP's send_email), verifies it right and
// wrong, and searches every answer, the portal's log, Vault's log and a
// file audit log for either password in any form.
func TestMailCanary(t *testing.T) {
	ctx := context.Background()
	f := newMCPOrg(t, "mail-canary")
	mount := contract.Mount(f.org)
	admin := vault.ClientWithToken(tokenFor(t, f.org, provision.RoleAdmin))

	auditLog := filepath.Join(t.TempDir(), "audit.log")
	root := vault.Client()
	if err := root.Sys().EnableAuditWithOptionsWithContext(ctx, "mail-audit", &api.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": auditLog},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = root.Sys().DisableAuditWithContext(ctx, "mail-audit") })
	logs := &syncBuffer{}
	base := servePortal(t, portal.Config{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}).URL()

	var seen strings.Builder
	msg := map[string]interface{}{"from": "ops@acme.example", "to": "a@acme.example", "subject": "canary", "text": "t"}
	s, err := vault.ClientWithToken(f.token).Logical().Write(mount+"/mail/mailer", msg)
	if err != nil {
		t.Fatalf("mail through Vault: %v", err)
	}
	fmt.Fprint(&seen, s.Data)
	status, h, body := viaPortal(t, base, f.token, http.MethodPost, "/broker/"+f.org+"/mailer/send", []byte(`{"from": "ops@acme.example", "to": ["a@acme.example"], "text": "t"}`))
	if status != http.StatusOK {
		t.Fatalf("mail through the edge: %d %s", status, body)
	}
	fmt.Fprint(&seen, h, string(body))
	tr := &transcript{token: f.token}
	sess, err := mcpSession(t, base+"/mcp/"+f.org, tr)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "send_email", Arguments: map[string]any{"from": "ops@acme.example", "to": []string{"a@acme.example"}, "subject": "s", "text": "t"}})
	if err != nil || res.IsError {
		t.Fatalf("send_email: %v %s", err, toolText(t, res))
	}
	if n := len(f.smtp.Messages()); n != 3 {
		t.Fatalf("the SMTP server got %d messages, want 3", n)
	}

	v, err := admin.Logical().Write(mount+"/creds/mailer/verify", nil)
	if err != nil || v.Data["verified"] != true {
		t.Fatalf("verify: %v %v", err, v)
	}
	const wrong = "smtp-WRONG-pw-8830"
	write(t, admin, mount+"/creds/mailer", map[string]interface{}{"password": wrong})
	v, err = admin.Logical().Write(mount+"/creds/mailer/verify", nil)
	if err != nil || v.Data["verified"] != false || v.Data["status"] != "needs_attention" {
		t.Fatalf("verify with a wrong password: %v %v", err, v)
	}
	fmt.Fprint(&seen, v.Data)
	_, err = vault.ClientWithToken(f.token).Logical().Write(mount+"/mail/mailer", msg)
	if err == nil || !strings.Contains(err.Error(), "535") {
		t.Fatalf("mail with a wrong password: %v", err)
	}
	fmt.Fprint(&seen, err)
	status, _, body = viaPortal(t, base, f.token, http.MethodPost, "/broker/"+f.org+"/mailer/send", []byte(`{"from": "ops@acme.example", "to": ["a@acme.example"], "text": "t"}`))
	if status != http.StatusBadGateway || !strings.Contains(string(body), "535") {
		t.Fatalf("the edge's /send with a wrong password: %d %s", status, body)
	}
	fmt.Fprint(&seen, string(body))

	vaultLog, _ := vault.ReadLog()
	audit, _ := os.ReadFile(auditLog)
	for where, text := range map[string]string{
		"answers": seen.String(), "MCP transcript": tr.String(), "portal log": logs.String(), "vault log": string(vaultLog), "audit log": string(audit),
	} {
		for _, secret := range []string{mcpSMTPPassword, wrong} {
			if leaks(text, secret) {
				t.Errorf("a password shows in the %s", where)
			}
		}
	}
	if !strings.Contains(string(audit), mount+"/mail/mailer") {
		t.Error("the audit log does not show the mail path")
	}
}

// TestMCPToolCallNeedsApproval: an HTTP tool call an approval rule names
// is answered with the approval's page and reaches nothing; once a person
// approves, the same call goes through once, and other arguments wait for
// their own approval. The call shows in the agent's trail.
func TestMCPToolCallNeedsApproval(t *testing.T) {
	f := newMCPOrg(t, "mcp-approval")
	mount := contract.Mount(f.org)
	admin := vault.ClientWithToken(tokenFor(t, f.org, provision.RoleAdmin))
	write(t, admin, mount+"/approval-rules/key-a", map[string]interface{}{"rules": "POST /echo/refunds"})
	s, err := mcpSession(t, f.base+"/mcp/"+f.org, &transcript{token: f.token})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	refund := func(body string) (bool, string) {
		t.Helper()
		res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "key-a", Arguments: map[string]any{"method": "POST", "path": "/echo/refunds", "text": body}})
		if err != nil {
			t.Fatal(err)
		}
		return res.IsError, toolText(t, res)
	}
	isErr, text := refund(`{"amount":100}`)
	if !isErr || !strings.Contains(text, "needs a person's approval") {
		t.Fatalf("the held call: %v %s", isErr, text)
	}
	_, rest, _ := strings.Cut(text, "(approval ")
	id := rest[:24]
	write(t, admin, mount+"/approvals/"+id+"/approve", nil)
	if isErr, text := refund(`{"amount":100000}`); !isErr || strings.Contains(text, id) {
		t.Errorf("other arguments with the approval: %v %s", isErr, text)
	}
	if isErr, text := refund(`{"amount":100}`); isErr {
		t.Fatalf("the approved call: %s", text)
	}
	if isErr, _ := refund(`{"amount":100}`); !isErr {
		t.Error("the approval let a second call through")
	}
	// Calls no rule names are not held.
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "key-a", Arguments: map[string]any{"method": "GET", "path": "/v1/balance"}})
	if err != nil || res.IsError {
		t.Fatalf("a call no rule names: %v %s", err, toolText(t, res))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		trail, err := admin.Logical().ReadWithContext(ctx, mount+"/agents/assistant/trail")
		if err != nil {
			t.Fatal(err)
		}
		if got := toJSON(t, trail.Data["calls"]); strings.Contains(got, `"ingress":"mcp"`) && strings.Contains(got, `"path":"/echo/refunds"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the MCP calls are not in the agent's trail: %v", trail.Data["calls"])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMCPBehindAReverseProxy: a portal listening on loopback behind a
// reverse proxy gets the public name as Host; its MCP server answers
// those requests as any other, while a Host that is neither loopback nor
// the public name (a DNS-rebinding page's) is still refused.
func TestMCPBehindAReverseProxy(t *testing.T) {
	f := newMCPOrg(t, "mcp-proxied")
	srv := servePortal(t, portal.Config{PublicURL: "https://portal.example.test"})
	endpoint := srv.URL() + "/mcp/" + f.org
	list := func(host string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+f.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, host := range []string{"portal.example.test", strings.TrimPrefix(srv.URL(), "http://")} {
		if status, body := list(host); status != http.StatusOK || !strings.Contains(body, `"list_credentials"`) {
			t.Errorf("Host %s: %d %s, want the tool list", host, status, body)
		}
	}
	if status, body := list("rebound.example"); status != http.StatusForbidden {
		t.Errorf("Host rebound.example: %d %s, want 403", status, body)
	}
}
