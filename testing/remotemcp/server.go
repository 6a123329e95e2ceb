// Package remotemcp is a remote MCP server for tests, built with the
// official go-sdk the way services ship theirs: Streamable HTTP at /mcp,
// an OAuth 2.1 protected resource (401 with resource_metadata, RFC 9728
// metadata at /.well-known/oauth-protected-resource/mcp) whose
// authorization server is the fosite test server, and a few tools.
package remotemcp

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/clankteam/credentials/testing/oauthserver"
)

// Server is a running remote MCP server.
type Server struct {
	http *http.Server
	base string
	mcp  *mcp.Server

	mu     sync.Mutex
	calls  []Call
	tokens map[string]bool
	// refuse is how many of the next requests are answered 401 whatever
	// their token (a token cut short at the provider).
	refuse int
	// sessions is the Streamable HTTP handler, which holds the sessions
	// (none after Stateless).
	sessions http.Handler
	// release lets one held export (export_held) end.
	release chan struct{}
}

// Call is one tools/call the server answered.
type Call struct {
	Tool  string
	Title string
}

// Start serves on 127.0.0.1 (a free port), with tokens checked at as.
func Start(as *oauthserver.Server) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("remotemcp: listen: %w", err)
	}
	s := &Server{base: "http://" + ln.Addr().String(), tokens: map[string]bool{}, release: make(chan struct{}, 1)}

	server := mcp.NewServer(&mcp.Implementation{Name: "remote-test", Version: "1.0.0"}, nil)
	type issueIn struct {
		Title string `json:"title" jsonschema:"the issue's title"`
	}
	type issueOut struct {
		Number int    `json:"number"`
		Title  string `json:"title"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "create_issue", Description: "Create an issue."},
		func(_ context.Context, _ *mcp.CallToolRequest, in issueIn) (*mcp.CallToolResult, issueOut, error) {
			s.mu.Lock()
			s.calls = append(s.calls, Call{Tool: "create_issue", Title: in.Title})
			n := len(s.calls)
			s.mu.Unlock()
			return nil, issueOut{Number: n, Title: in.Title}, nil
		})

	type repoIn struct {
		Repo string `json:"repo" jsonschema:"the repository to delete"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "delete_repo", Description: "Delete a repository.", Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true)}},
		func(_ context.Context, _ *mcp.CallToolRequest, in repoIn) (*mcp.CallToolResult, any, error) {
			s.mu.Lock()
			s.calls = append(s.calls, Call{Tool: "delete_repo", Title: in.Repo})
			s.mu.Unlock()
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "deleted " + in.Repo}}}, nil, nil
		})

	// A record whose id is past 2^53, as services' 64-bit ids are: a
	// result decoded into float64 on its way loses it.
	server.AddTool(&mcp.Tool{Name: "get_record", Description: "Read a record.", InputSchema: map[string]any{"type": "object"}},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			s.mu.Lock()
			s.calls = append(s.calls, Call{Tool: "get_record"})
			s.mu.Unlock()
			record := fmt.Sprintf(`{"id":%d}`, RecordID)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: record}}, StructuredContent: json.RawMessage(record)}, nil
		})

	// A careless tool that answers with the token it was called with: the
	// broker's scrubber must take it out before an agent sees it.
	server.AddTool(&mcp.Tool{Name: "echo_token", Description: "Say which token called.", InputSchema: map[string]any{"type": "object"}},
		func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			token := ""
			if req.Extra != nil && req.Extra.TokenInfo != nil {
				token, _ = req.Extra.TokenInfo.Extra["token"].(string)
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "called with " + token}}}, nil
		})

	// A long tool that tells its progress, three steps, when asked to.
	mcp.AddTool(server, &mcp.Tool{Name: "export_report", Description: "Export a report, telling its progress."},
		func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			if token := req.Params.GetProgressToken(); token != nil {
				for i := 1; i <= 3; i++ {
					_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: token,
						Progress: float64(i), Total: 3, Message: fmt.Sprintf("step %d of 3", i)})
				}
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "exported"}}}, nil, nil
		})

	// An export that tells its first step, then is held until the test
	// releases it (Release): what the client sees of it meanwhile is
	// what was streamed.
	mcp.AddTool(server, &mcp.Tool{Name: "export_held", Description: "Export a report, held after its first step."},
		func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			if token := req.Params.GetProgressToken(); token != nil {
				_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: token, Progress: 1, Total: 2, Message: "step 1 of 2"})
			}
			select {
			case <-s.release:
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "exported"}}}, nil, nil
		})

	verify := func(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		s.mu.Lock()
		refused := s.refuse > 0
		if refused {
			s.refuse--
		}
		s.mu.Unlock()
		if refused || !as.Introspect(token) {
			return nil, auth.ErrInvalidToken
		}
		s.mu.Lock()
		s.tokens[token] = true
		s.mu.Unlock()
		return &auth.TokenInfo{Expiration: time.Now().Add(time.Hour), Extra: map[string]any{"token": token}}, nil
	}
	mux := http.NewServeMux()
	mux.Handle("/.well-known/oauth-protected-resource/mcp", auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
		Resource: s.MCPURL(), AuthorizationServers: []string{as.Issuer()}, BearerMethodsSupported: []string{"header"},
	}))
	s.mcp = server
	// Sessions, as most remote servers keep: a tool added later is
	// announced to them (notifications/tools/list_changed).
	s.ForgetSessions()
	mux.Handle("/mcp", auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{
		ResourceMetadataURL: s.base + "/.well-known/oauth-protected-resource/mcp",
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		h := s.sessions
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	})))
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.http.Serve(ln) }()
	return s, nil
}

// RecordID is the id tool get_record answers: 2^53 + 1, which a float64
// cannot hold.
const RecordID int64 = 1<<53 + 1

// MCPURL is the server's MCP endpoint, which is also its resource.
func (s *Server) MCPURL() string { return s.base + "/mcp" }

// Calls are the tool calls answered so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Tokens are the access tokens the server accepted so far: what must
// never reach an agent.
func (s *Server) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.tokens))
	for t := range s.tokens {
		out = append(out, t)
	}
	return out
}

// ForgetSessions ends every session as a restart does: a request on one
// is answered 404, and the client must open a new one.
func (s *Server) ForgetSessions() { s.serve(nil) }

// Stateless serves the stateless protocol (2026-07-28) from now on, as
// servers without sessions do: no session IDs, every request on its own.
// Clients of earlier protocols are still answered, without sessions.
func (s *Server) Stateless() { s.serve(&mcp.StreamableHTTPOptions{Stateless: true}) }

// serve answers /mcp with a new Streamable HTTP handler made with opts.
func (s *Server) serve(opts *mcp.StreamableHTTPOptions) {
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.mcp }, opts)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions = h
}

// Release lets one held export (export_held) end.
func (s *Server) Release() { s.release <- struct{}{} }

// RefuseNext answers the next n requests 401, whatever their token.
func (s *Server) RefuseNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse = n
}

// AddTool adds a tool (named name, answering "done"), which the server
// announces to its sessions.
func (s *Server) AddTool(name string) {
	s.mcp.AddTool(&mcp.Tool{Name: name, Description: "Added later.", InputSchema: map[string]any{"type": "object"}},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			s.mu.Lock()
			s.calls = append(s.calls, Call{Tool: name})
			s.mu.Unlock()
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil
		})
}

// Close stops the server.
func (s *Server) Close() { _ = s.http.Close() }

func ptr[T any](v T) *T { return &v }

// StartForTest starts an authorization server with opts and a remote MCP
// server protected by it, both stopped when the test ends.
func StartForTest(t testing.TB, opts oauthserver.Options) (*oauthserver.Server, *Server) {
	t.Helper()
	as, err := oauthserver.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.Close)
	remote, err := Start(as)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remote.Close)
	return as, remote
}
