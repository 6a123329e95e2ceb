package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/oauthserver"
	"github.com/clankteam/credentials/testing/remotemcp"
)

// Remote MCP servers through the portal: the engine connects a credential
// to a remote MCP server protected by the fosite test server (discovery,
// RFC 7591 registration, PKCE, resource, iss), and agents call the remote
// server's tools on /mcp/<org> as <cred>.<tool>, each request authorized by
// Vault with the agent's token, the remote token never in their sight.

// connectRemote writes config, then a service naming remote's server, an
// app registered with register=true and credential tracker, and connects
// it through the whole flow.
func connectRemote(t *testing.T, admin *api.Client, mount string, remote *remotemcp.Server, config map[string]interface{}) {
	t.Helper()
	write(t, admin, mount+"/config", config)
	write(t, admin, mount+"/services/tracker", map[string]interface{}{"types": "oauth2", "mcp_url": remote.MCPURL()})
	write(t, admin, mount+"/apps/tracker-app", map[string]interface{}{"service": "tracker", "register": true})
	write(t, admin, mount+"/creds/tracker", map[string]interface{}{"type": "oauth2", "service": "tracker", "app": "tracker-app"})
	started := write(t, admin, mount+"/creds/tracker/connect", nil)
	back := authorizeAt(t, started.Data["auth_url"].(string))
	write(t, admin, mount+"/creds/tracker/callback", map[string]interface{}{
		"code": back.Get("code"), "state": back.Get("state"), "iss": back.Get("iss"),
	})
}

// connectedRemote is a new org whose credential tracker is connected to a
// remote MCP server of its own, registered by RFC 7591.
func connectedRemote(t *testing.T, name string) (string, *remotemcp.Server) {
	t.Helper()
	org := newOrg(t, name)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	_, remote := remotemcp.StartForTest(t, oauthserver.Options{AutoApprove: true, IssInCallback: true})
	connectRemote(t, admin, contract.Mount(org), remote, map[string]interface{}{"redirect_url": "http://127.0.0.1:1/oauth/callback"})
	return org, remote
}

// TestRemoteMCPConnectsByClientMetadataDocument: an authorization server
// that takes client ID metadata documents reads the portal's, and the
// engine's client is that document's: nothing is registered, and agents'
// tool calls run on the grant.
func TestRemoteMCPConnectsByClientMetadataDocument(t *testing.T) {
	org := newOrg(t, "remote-cimd")
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	as, remote := remotemcp.StartForTest(t, oauthserver.Options{AutoApprove: true, IssInCallback: true, CIMD: true})
	srv := servePortal(t, portal.Config{})

	connectRemote(t, admin, mount, remote, map[string]interface{}{"redirect_url": srv.CallbackURL(), "client_metadata_url": srv.ClientMetadataURL()})
	if as.Registrations() != 0 || as.DocumentsFetched() == 0 {
		t.Fatalf("%d registrations and %d documents read: want the portal's document, nothing registered", as.Registrations(), as.DocumentsFetched())
	}
	token := newAgent(t, org, provision.AgentSpec{Name: "triage", Creds: []string{"tracker"}})
	s, err := mcpSession(t, srv.URL()+"/mcp/"+org, &transcript{token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := s.CallTool(context.Background(), &mcp.CallToolParams{Name: "tracker.create_issue", Arguments: map[string]any{"title": "by the document's client"}})
	if err != nil || res.IsError {
		t.Fatalf("tracker.create_issue: %v %s", err, toolText(t, res))
	}
	if calls := remote.Calls(); len(calls) != 1 || calls[0].Title != "by the document's client" {
		t.Fatalf("the remote server saw %v", calls)
	}
}

// Long on purpose: one story told in order, whose steps depend on the ones before.
func TestRemoteMCPToolsThroughThePortal(t *testing.T) {
	ctx := context.Background()
	org := newOrg(t, "remote-mcp")
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))

	as, remote := remotemcp.StartForTest(t, oauthserver.Options{AutoApprove: true, IssInCallback: true})

	auditLog := fileAudit(t, "remote-mcp-audit")

	connectRemote(t, admin, mount, remote, map[string]interface{}{"redirect_url": "http://127.0.0.1:1/oauth/callback"})

	full := newAgent(t, org, provision.AgentSpec{Name: "triage", Creds: []string{"tracker"}})
	reporter := newAgent(t, org, provision.AgentSpec{Name: "reporter", Creds: []string{"tracker"}, Tools: []string{"create_issue"}})
	cautious := newAgent(t, org, provision.AgentSpec{Name: "cautious", Creds: []string{"tracker"}, DenyTools: []string{"delete_repo"}})

	logs := &syncBuffer{}
	base := servePortal(t, portal.Config{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}).URL()
	endpoint := base + "/mcp/" + org

	tr := &transcript{token: full}
	s, err := mcpSession(t, endpoint, tr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	names := toolNamesOf(t, s)
	if !slices.Contains(names, "tracker.create_issue") || !slices.Contains(names, "tracker.delete_repo") {
		t.Fatalf("tools %v: want the remote server's tools as tracker.<tool>", names)
	}

	// A call reaches the remote server with the org's token; the agent
	// gets the remote result.
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "tracker.create_issue", Arguments: map[string]any{"title": "from the agent"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError || !strings.Contains(toolText(t, res), `"title":"from the agent"`) {
		t.Fatalf("tracker.create_issue: error=%v %s", res.IsError, toolText(t, res))
	}
	if calls := remote.Calls(); len(calls) != 1 || calls[0] != (remotemcp.Call{Tool: "create_issue", Title: "from the agent"}) {
		t.Fatalf("the remote server saw %v", calls)
	}

	// A remote 401 is answered by the engine and the request sent again:
	// the agent sees a result, not the refusal.
	remote.RefuseNext(1)
	res, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "tracker.create_issue", Arguments: map[string]any{"title": "after a refusal"}})
	if err != nil || res.IsError {
		t.Fatalf("after one refusal: %v %s", err, toolText(t, res))
	}
	if n := len(remote.Calls()); n != 2 {
		t.Fatalf("the remote server answered %d calls, want 2", n)
	}

	// Tool rules: reporter may list and call create_issue only, and has
	// no HTTP tool; cautious everything but delete_repo.
	trReporter := &transcript{token: reporter}
	sr, err := mcpSession(t, endpoint, trReporter)
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Close()
	if got := toolNamesOf(t, sr); strings.Join(got, " ") != "list_credentials tracker.create_issue" {
		t.Errorf("reporter's tools %v, want list_credentials and tracker.create_issue", got)
	}
	res, err = sr.CallTool(ctx, &mcp.CallToolParams{Name: "tracker.delete_repo", Arguments: map[string]any{"repo": "prod"}})
	if err == nil && !res.IsError {
		t.Fatalf("reporter called delete_repo: %s", toolText(t, res))
	}
	trCautious := &transcript{token: cautious}
	sc, err := mcpSession(t, endpoint, trCautious)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if got := toolNamesOf(t, sc); !slices.Contains(got, "tracker.create_issue") || slices.Contains(got, "tracker.delete_repo") {
		t.Errorf("cautious's tools %v, want create_issue without delete_repo", got)
	}
	// Vault decides, whatever a list shows: the engine's tool path with
	// reporter's token is refused for delete_repo.
	_, err = vault.ClientWithToken(reporter).Logical().Write(mount+"/proxy/tracker/TOOL/delete_repo", map[string]interface{}{"edge_key": vault.PortalEdgeKey().ID})
	assertStatus(t, err, http.StatusForbidden, "permission denied")
	for _, c := range remote.Calls() {
		if c.Tool == "delete_repo" {
			t.Fatalf("the remote server ran delete_repo for an agent not allowed it")
		}
	}

	// A tool the remote server adds is announced (tools/list_changed) and
	// listed at once, not after the list's 5 minutes of reuse.
	remote.AddTool("close_issue")
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(toolNamesOf(t, s), "tracker.close_issue") {
		if time.Now().After(deadline) {
			t.Fatalf("tracker.close_issue is not listed 10 s after the remote server announced it")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A grant revoked at the provider: the agent is told where a person
	// reconnects it.
	as.RevokeAll()
	res, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "tracker.create_issue", Arguments: map[string]any{"title": "after revocation"}})
	if err != nil {
		t.Fatal(err)
	}
	if text := toolText(t, res); !res.IsError || !strings.Contains(text, "reconnect") || !strings.Contains(text, base+"/orgs/"+org+"/creds/tracker") {
		t.Fatalf("after revocation: error=%v %s", res.IsError, text)
	}

	// Each remote call was authorized by Vault on the tool's path.
	audit, _ := os.ReadFile(auditLog)
	for _, p := range []string{mount + "/proxy/tracker/TOOL", mount + "/proxy/tracker/TOOL/create_issue"} {
		if !strings.Contains(string(audit), `"`+p+`"`) {
			t.Errorf("the audit log does not show %s", p)
		}
	}
	sec, err := admin.Logical().Read(mount + "/creds/tracker")
	if err != nil || sec == nil || sec.Data["last_used_at"] == nil || sec.Data["last_used_at"] == "" {
		t.Errorf("no last use recorded: %v %v", err, sec)
	}

	// Canary: the remote tokens are in no transcript, log or audit.
	tokens := remote.Tokens()
	if len(tokens) == 0 {
		t.Fatal("the remote server accepted no token")
	}
	vaultLog, _ := vault.ReadLog()
	for where, text := range map[string]string{
		"triage's transcript": tr.String(), "reporter's transcript": trReporter.String(), "cautious's transcript": trCautious.String(),
		"portal log": logs.String(), "vault log": string(vaultLog), "audit log": string(audit),
	} {
		for _, tok := range tokens {
			if leaks(text, tok) {
				t.Errorf("a remote token shows in the %s", where)
			}
		}
	}
}

// TestRemoteMCPToolNeedsApproval: a remote tool an approval rule names is
// answered with a tool error carrying the approval's page, and nothing
// reaches the remote server; once a person approves, the same call goes
// through once; other arguments, or the same call again, wait for a new
// approval.
func TestRemoteMCPToolNeedsApproval(t *testing.T) {
	org := newOrg(t, "remote-approval")
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	_, remote := remotemcp.StartForTest(t, oauthserver.Options{AutoApprove: true, IssInCallback: true, CIMD: true})
	srv := servePortal(t, portal.Config{})
	connectRemote(t, admin, mount, remote, map[string]interface{}{"redirect_url": srv.CallbackURL(), "client_metadata_url": srv.ClientMetadataURL()})
	write(t, admin, mount+"/approval-rules/tracker", map[string]interface{}{"rules": "TOOL create_issue"})
	token := newAgent(t, org, provision.AgentSpec{Name: "triage", Creds: []string{"tracker"}})
	s, err := mcpSession(t, srv.URL()+"/mcp/"+org, &transcript{token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	create := func(title string) (bool, string) {
		t.Helper()
		res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "tracker.create_issue", Arguments: map[string]any{"title": title}})
		if err != nil {
			t.Fatal(err)
		}
		return res.IsError, toolText(t, res)
	}
	isErr, text := create("needs a person")
	if !isErr || !strings.Contains(text, "needs a person's approval") || !strings.Contains(text, "/orgs/"+org+"/approvals/") {
		t.Fatalf("the held tool call: %v %s", isErr, text)
	}
	if n := len(remote.Calls()); n != 0 {
		t.Fatalf("a held tool call reached the remote server (%d calls)", n)
	}
	_, rest, _ := strings.Cut(text, "(approval ")
	id := rest[:24]
	// Asking again before a decision names the same approval.
	if _, again := create("needs a person"); !strings.Contains(again, id) {
		t.Errorf("asked again before a decision: %s", again)
	}
	write(t, admin, mount+"/approvals/"+id+"/approve", nil)
	if isErr, text := create("another title"); !isErr || strings.Contains(text, id) {
		t.Errorf("other arguments used the approval: %v %s", isErr, text)
	}
	if isErr, text := create("needs a person"); isErr {
		t.Fatalf("the approved call: %s", text)
	}
	if calls := remote.Calls(); len(calls) != 1 || calls[0].Title != "needs a person" {
		t.Fatalf("the remote server saw %v", calls)
	}
	if isErr, _ := create("needs a person"); !isErr {
		t.Error("the approval let a second call through")
	}
	// Tools no rule names are not held.
	if res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "tracker.delete_repo", Arguments: map[string]any{"repo": "scratch"}}); err != nil || res.IsError {
		t.Errorf("a tool no rule names: %v %s", err, toolText(t, res))
	}
}

// TestRemoteMCPProgressReachesTheAgent: a remote tool's progress
// notifications reach the agent that asked for them, under the agent's
// own progress token.
func TestRemoteMCPProgressReachesTheAgent(t *testing.T) {
	org := newOrg(t, "remote-progress")
	mount := contract.Mount(org)
	admin := vault.ClientWithToken(tokenFor(t, org, provision.RoleAdmin))
	_, remote := remotemcp.StartForTest(t, oauthserver.Options{AutoApprove: true, IssInCallback: true, CIMD: true})
	srv := servePortal(t, portal.Config{})
	connectRemote(t, admin, mount, remote, map[string]interface{}{"redirect_url": srv.CallbackURL(), "client_metadata_url": srv.ClientMetadataURL()})
	token := newAgent(t, org, provision.AgentSpec{Name: "reporter", Creds: []string{"tracker"}})
	var mu sync.Mutex
	var got []string
	client := mcp.NewClient(&mcp.Implementation{Name: "integration-agent", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, fmt.Sprintf("%v %v/%v %s", req.Params.ProgressToken, req.Params.Progress, req.Params.Total, req.Params.Message))
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL() + "/mcp/" + org, HTTPClient: &http.Client{Transport: &transcript{token: token}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	params := &mcp.CallToolParams{Name: "tracker.export_report", Arguments: map[string]any{}}
	params.SetProgressToken("agent-42")
	res, err := s.CallTool(ctx, params)
	if err != nil || res.IsError {
		t.Fatalf("tracker.export_report: %v %s", err, toolText(t, res))
	}
	// The client hands notifications to its handler on its own goroutine.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 3 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, "; ") != "agent-42 1/3 step 1 of 3; agent-42 2/3 step 2 of 3; agent-42 3/3 step 3 of 3" {
		t.Errorf("the agent saw progress %q", got)
	}
}

// TestRemoteMCPToolCallIsOneVaultDecision: a remote tool call, with its
// approval rules, is decided by Vault once, not once for its rules and
// again for its request; so a limit on the credential counts it once.
func TestRemoteMCPToolCallIsOneVaultDecision(t *testing.T) {
	ctx := context.Background()
	org, remote := connectedRemote(t, "remote-mcp-once")
	auditLog := fileAudit(t, "remote-mcp-once-audit")
	agent := newAgent(t, org, provision.AgentSpec{Name: "once", Creds: []string{"tracker"}})
	base := servePortal(t, portal.Config{}).URL()
	s, err := mcpSession(t, base+"/mcp/"+org, &transcript{token: agent})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	call := func(title string) {
		t.Helper()
		res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "tracker.create_issue", Arguments: map[string]any{"title": title}})
		if err != nil || res.IsError {
			t.Fatalf("tracker.create_issue: %v %s", err, toolText(t, res))
		}
	}
	// The first call opens the remote session and fetches the injection;
	// the ones after reuse both, as every call does in the steady state.
	call("warm")
	decisions := func() int {
		t.Helper()
		data, err := os.ReadFile(auditLog)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range strings.Split(string(data), "\n") {
			if !strings.Contains(line, `"type":"request"`) {
				continue
			}
			if strings.Contains(line, `"path":"sys/capabilities-self"`) || strings.Contains(line, `"path":"`+contract.Mount(org)+`/proxy/tracker/TOOL/create_issue"`) {
				n++
			}
		}
		return n
	}
	before := decisions()
	const calls = 5
	for i := range calls {
		call(fmt.Sprintf("issue %d", i))
	}
	if got := decisions() - before; got != calls {
		t.Errorf("%d remote tool calls were decided by Vault %d times, want once each", calls, got)
	}
	if n := len(remote.Calls()); n != calls+1 {
		t.Errorf("the remote server saw %d calls, want %d", n, calls+1)
	}
}

// TestRemoteMCPResultReachesTheAgentAsWritten: the remote server's result
// is the agent's as the server wrote it, a 64-bit id included (a result
// decoded into float64 on its way answers 2^53 for 2^53+1), for a client
// of either protocol generation, and a remote server with sessions or of
// the stateless protocol.
func TestRemoteMCPResultReachesTheAgentAsWritten(t *testing.T) {
	for _, stateless := range []bool{false, true} {
		name := "remote-mcp-as-written"
		if stateless {
			name += "-stateless"
		}
		t.Run(name, func(t *testing.T) {
			org, remote := connectedRemote(t, name)
			if stateless {
				remote.Stateless()
			}
			agent := newAgent(t, org, provision.AgentSpec{Name: "reader", Creds: []string{"tracker"}})
			endpoint := servePortal(t, portal.Config{}).URL() + "/mcp/" + org
			resultAsWritten(t, endpoint, agent)
			if n := len(remote.Calls()); n != 2 {
				t.Errorf("the remote server saw %d calls, want 2", n)
			}
		})
	}
}

// resultAsWritten calls tracker.get_record on endpoint as a client of
// each protocol generation, and wants the record's id as written.
func resultAsWritten(t *testing.T, endpoint, agent string) {
	t.Helper()
	want := fmt.Sprintf(`"structuredContent":{"id":%d}`, remotemcp.RecordID)
	for _, tc := range []struct{ version, meta string }{
		{"2025-11-25", ""},
		{"2026-07-28", `,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"test","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`},
	} {
		body := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"tracker.get_record","arguments":{}` + tc.meta + `}}`
		resp, answer := postToolCall(t, endpoint, agent, tc.version, "tracker.get_record", body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(answer), `"id":7`) || !strings.Contains(string(answer), want) {
			t.Errorf("protocol %s: %d %s\nwant the result with %s", tc.version, resp.StatusCode, answer, want)
		}
		if tc.version >= "2026-07-28" && !strings.Contains(string(answer), `"resultType":"complete"`) {
			t.Errorf("protocol %s: %s\nwant resultType complete, as the stateless protocol's results say", tc.version, answer)
		}
	}
}

// postToolCall posts a JSON-RPC tools/call of tool, body, to endpoint
// with an agent's token, as a client of protocol version would (the
// stateless protocol's method and name headers too), and reads the
// whole answer.
func postToolCall(t *testing.T, endpoint, agent, version, tool, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+agent)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", version)
	if version >= "2026-07-28" {
		req.Header.Set("Mcp-Method", "tools/call")
		req.Header.Set("Mcp-Name", tool)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp, answer
}

// TestRemoteMCPAnswerIsScrubbed: a remote tool that answers with the
// token it was called with reaches the agent with the token taken out,
// whether the call is passed through or goes by the SDK (asking for
// progress), from a remote server with sessions and from one of the
// stateless protocol.
func TestRemoteMCPAnswerIsScrubbed(t *testing.T) {
	for _, stateless := range []bool{false, true} {
		name := "remote-mcp-scrub"
		if stateless {
			name += "-stateless"
		}
		t.Run(name, func(t *testing.T) {
			org, remote := connectedRemote(t, name)
			if stateless {
				remote.Stateless()
			}
			agent := newAgent(t, org, provision.AgentSpec{Name: "scrubbed", Creds: []string{"tracker"}})
			tr := &transcript{token: agent}
			s, err := mcpSession(t, servePortal(t, portal.Config{}).URL()+"/mcp/"+org, tr)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			echoTokenScrubbed(t, s, remote)
			for _, tok := range remote.Tokens() {
				if leaks(tr.String(), tok) {
					t.Error("a remote token shows in the agent's transcript")
				}
			}
		})
	}
}

// echoTokenScrubbed calls tracker.echo_token on s, passed through and
// asking for progress, and wants the remote server's words without its
// tokens.
func echoTokenScrubbed(t *testing.T, s *mcp.ClientSession, remote *remotemcp.Server) {
	t.Helper()
	for _, progress := range []bool{false, true} {
		params := &mcp.CallToolParams{Name: "tracker.echo_token", Arguments: map[string]any{}}
		if progress {
			params.SetProgressToken("p-1")
		}
		res, err := s.CallTool(context.Background(), params)
		if err != nil || res.IsError {
			t.Fatalf("progress %v: %v %s", progress, err, toolText(t, res))
		}
		text := toolText(t, res)
		if !strings.HasPrefix(text, "called with ") || len(text) == len("called with ") {
			t.Fatalf("progress %v: %q, want the remote server's words", progress, text)
		}
		for _, tok := range remote.Tokens() {
			if leaks(text, tok) {
				t.Fatalf("progress %v: the remote token reached the agent", progress)
			}
		}
	}
}

// TestRemoteMCPSessionEndedByTheServer: a remote server that forgot the
// portal's session (restarted) answers 404 on it; the portal opens a new
// session and makes the call there, once.
func TestRemoteMCPSessionEndedByTheServer(t *testing.T) {
	ctx := context.Background()
	org, remote := connectedRemote(t, "remote-mcp-restart")
	agent := newAgent(t, org, provision.AgentSpec{Name: "steady", Creds: []string{"tracker"}})
	s, err := mcpSession(t, servePortal(t, portal.Config{}).URL()+"/mcp/"+org, &transcript{token: agent})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, title := range []string{"before", "after the restart", "on the new session"} {
		if i == 1 {
			remote.ForgetSessions()
		}
		res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "tracker.create_issue", Arguments: map[string]any{"title": title}})
		if err != nil || res.IsError {
			t.Fatalf("%s: %v %s", title, err, toolText(t, res))
		}
		if calls := remote.Calls(); len(calls) != i+1 || calls[i].Title != title {
			t.Fatalf("%s: the remote server saw %v", title, calls)
		}
	}
}

// TestRemoteMCPStatelessServer: a remote server of the stateless protocol
// (no sessions, each request on its own) serves the agent as one with
// sessions does: its tools listed, a call passed through, a 401 answered
// by one refresh and one retry, the remote token in none of it (its
// answers scrubbed: TestRemoteMCPAnswerIsScrubbed).
func TestRemoteMCPStatelessServer(t *testing.T) {
	ctx := context.Background()
	org, remote := connectedRemote(t, "remote-mcp-stateless")
	remote.Stateless()
	agent := newAgent(t, org, provision.AgentSpec{Name: "stateless", Creds: []string{"tracker"}})
	tr := &transcript{token: agent}
	s, err := mcpSession(t, servePortal(t, portal.Config{}).URL()+"/mcp/"+org, tr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if names := toolNamesOf(t, s); !slices.Contains(names, "tracker.create_issue") || !slices.Contains(names, "tracker.echo_token") {
		t.Fatalf("tools %v: want the remote server's tools", names)
	}
	for i, title := range []string{"first", "after a refusal"} {
		if i == 1 {
			remote.RefuseNext(1)
		}
		res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "tracker.create_issue", Arguments: map[string]any{"title": title}})
		if err != nil || res.IsError || !strings.Contains(toolText(t, res), `"title":"`+title+`"`) {
			t.Fatalf("%s: %v %s", title, err, toolText(t, res))
		}
		if calls := remote.Calls(); len(calls) != i+1 || calls[i].Title != title {
			t.Fatalf("%s: the remote server saw %v", title, calls)
		}
	}
	tokens := remote.Tokens()
	if len(tokens) == 0 {
		t.Fatal("the remote server accepted no token")
	}
	for _, tok := range tokens {
		if leaks(tr.String(), tok) {
			t.Fatal("a remote token shows in the agent's transcript")
		}
	}
}

// TestRemoteMCPProgressCallPassedThrough: a remote tool's call that asks
// for progress is answered as an event stream with the remote server's
// progress, under the agent's own progress token, before its result, and
// the result as the remote server wrote it (an id of 2^53+1 stays one),
// scrubbed of the remote token.
func TestRemoteMCPProgressCallPassedThrough(t *testing.T) {
	org, remote := connectedRemote(t, "remote-mcp-progress-pass")
	agent := newAgent(t, org, provision.AgentSpec{Name: "reporter", Creds: []string{"tracker"}})
	endpoint := servePortal(t, portal.Config{}).URL() + "/mcp/" + org
	call := func(tool string) []string {
		t.Helper()
		body := `{"jsonrpc":"2.0","id":"call-1","method":"tools/call","params":{"name":"` + tool + `","arguments":{},"_meta":{"progressToken":"agent-9"}}}`
		resp, answer := postToolCall(t, endpoint, agent, "2025-11-25", tool, body)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("%s: %d %s %s", tool, resp.StatusCode, resp.Header.Get("Content-Type"), answer)
		}
		var messages []string
		for _, line := range strings.Split(string(answer), "\n") {
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				messages = append(messages, data)
			}
		}
		return messages
	}

	messages := call("tracker.export_report")
	if len(messages) != 4 {
		t.Fatalf("tracker.export_report: %d messages, want 3 progress notifications and the result:\n%s", len(messages), strings.Join(messages, "\n"))
	}
	for i, m := range messages[:3] {
		var n struct {
			Method string `json:"method"`
			Params struct {
				ProgressToken   any
				Progress, Total json.Number
				Message         string
			} `json:"params"`
		}
		_ = json.Unmarshal([]byte(m), &n)
		got := fmt.Sprintf("%s %v %s/%s %s", n.Method, n.Params.ProgressToken, n.Params.Progress, n.Params.Total, n.Params.Message)
		if want := fmt.Sprintf("notifications/progress agent-9 %d/3 step %d of 3", i+1, i+1); got != want {
			t.Errorf("message %d: %s\nwant %s", i+1, m, want)
		}
	}
	if last := messages[3]; !strings.Contains(last, `"id":"call-1"`) || !strings.Contains(last, `"text":"exported"`) {
		t.Errorf("the last message: %s\nwant the call's result", last)
	}

	want := fmt.Sprintf(`"structuredContent":{"id":%d}`, remotemcp.RecordID)
	if messages := call("tracker.get_record"); len(messages) != 1 || !strings.Contains(messages[0], want) {
		t.Errorf("tracker.get_record: %s\nwant the result alone, with %s", strings.Join(messages, "\n"), want)
	}

	echoed := call("tracker.echo_token")
	if len(echoed) != 1 || !strings.Contains(echoed[0], `"text":"called with `) {
		t.Fatalf("tracker.echo_token: %s\nwant the remote server's words", strings.Join(echoed, "\n"))
	}
	for _, tok := range remote.Tokens() {
		if leaks(echoed[0], tok) {
			t.Fatal("the remote token reached the agent")
		}
	}
}

// TestRemoteMCPProgressIsStreamed: a progress notification of a passed-
// through call reaches the agent while the remote tool is still running,
// not when its answer ends.
func TestRemoteMCPProgressIsStreamed(t *testing.T) {
	org, remote := connectedRemote(t, "remote-mcp-progress-stream")
	agent := newAgent(t, org, provision.AgentSpec{Name: "streamed", Creds: []string{"tracker"}})
	endpoint := servePortal(t, portal.Config{}).URL() + "/mcp/" + org
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"tracker.export_held","arguments":{},"_meta":{"progressToken":"agent-1"}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = http.Header{"Authorization": {"Bearer " + agent}, "Content-Type": {"application/json"},
		"Accept": {"application/json, text/event-stream"}, "Mcp-Protocol-Version": {"2025-11-25"}}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewReader(resp.Body)
	next := func() string {
		t.Helper()
		for {
			line, err := events.ReadString('\n')
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				return data
			}
			if err != nil {
				t.Fatalf("the answer ended without the next event: %v", err)
			}
		}
	}
	// The tool is held: this event can only have been streamed.
	if first := next(); !strings.Contains(first, `"notifications/progress"`) || !strings.Contains(first, `"progressToken":"agent-1"`) {
		t.Fatalf("the first event: %s\nwant the progress notification", first)
	}
	remote.Release()
	if last := next(); !strings.Contains(last, `"id":1`) || !strings.Contains(last, `"text":"exported"`) {
		t.Errorf("the last event: %s\nwant the call's result", last)
	}
}
