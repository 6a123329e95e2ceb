package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
)

// The remote servers' tools as the agent sees them: <cred>.<tool>, only
// those its rules allow, each call made through remoteMCP (mcp_remote.go).

// remoteToolName is a remote tool's name on /mcp/<org>.
func remoteToolName(cred, tool string) string { return cred + "." + tool }

// listRemote fills c.remote with the remote tools the token may call.
func (m *mcpServer) listRemote(ctx context.Context, org, token string, c *agentCred) {
	tools, rc, err := m.remote.tools(ctx, org, c.Name, c.MCPURL, token)
	if err != nil {
		c.remoteErr = m.remoteFailure(rc, c, err)
		m.logger.Warn("mcp: listing a remote server's tools failed", "org", org, "cred", c.Name, "reason", c.remoteErr)
		return
	}
	for _, t := range tools {
		if !c.Tools.allows(t.Name) || !contract.ValidToolName(remoteToolName(c.Name, t.Name)) || !objectSchema(t.InputSchema) {
			continue
		}
		c.remote = append(c.remote, t)
	}
}

// objectSchema says whether schema is a JSON Schema of an object, as an
// MCP tool's input schema must be.
func objectSchema(schema any) bool {
	raw, err := json.Marshal(schema)
	if err != nil {
		return false
	}
	var m struct {
		Type any `json:"type"`
	}
	return json.Unmarshal(raw, &m) == nil && m.Type == "object"
}

// remoteTool is a remote tool as /mcp/<org> offers it: whose, and its name
// on the remote server.
type remoteTool struct {
	cred *agentCred
	name string
	// paramHeaders says the tool's schema names arguments that requests
	// of the stateless protocol mirror in headers (x-mcp-header).
	paramHeaders bool
}

// addRemoteTool offers remote tool t of credential c; a tool the server
// cannot take (a schema it refuses) is left out, and added says so.
func (m *mcpServer) addRemoteTool(s *mcp.Server, org string, c *agentCred, t *mcp.Tool) (added bool) {
	name := remoteToolName(c.Name, t.Name)
	desc := t.Description
	if desc == "" {
		desc = t.Title
	}
	tool := &mcp.Tool{
		Name:        name,
		Title:       t.Title,
		Description: strings.TrimSpace(fmt.Sprintf("%s (Tool %s of %s's MCP server, called with credential %s, which the broker holds.)", desc, t.Name, serviceTitle(c), c.Name)),
		InputSchema: t.InputSchema,
		Annotations: t.Annotations,
	}
	defer func() {
		if r := recover(); r != nil {
			added = false
			m.logger.Warn("mcp: a remote tool is left out", "org", org, "cred", c.Name, "tool", t.Name, "reason", fmt.Sprint(r))
		}
	}()
	remoteName := t.Name
	s.AddTool(tool, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return m.callRemoteBySDK(ctx, callOf(org, req), c, remoteName, req), nil
	})
	return true
}

// callRemoteBySDK calls one remote tool by the SDK's client: a call whose
// progress the agent asked for (passRemote takes the others). The remote
// server's result is passed on as the client read it (scrubbed on the way).
func (m *mcpServer) callRemoteBySDK(ctx context.Context, call *mcpCall, c *agentCred, tool string, req *mcp.CallToolRequest) *mcp.CallToolResult {
	var progress progressFunc
	if agentToken := req.Params.GetProgressToken(); agentToken != nil && req.Session != nil {
		// On the agent's request's context: the notification goes on that
		// request's stream.
		agentCtx := ctx
		progress = func(_ context.Context, p *mcp.ProgressNotificationParams) {
			_ = req.Session.NotifyProgress(agentCtx, &mcp.ProgressNotificationParams{ProgressToken: agentToken,
				Progress: p.Progress, Total: p.Total, Message: p.Message})
		}
	}
	var args any
	if len(req.Params.Arguments) > 0 {
		args = req.Params.Arguments
	}
	var res *mcp.CallToolResult
	failed := m.callRemote(ctx, call, c, tool, req.Params.Arguments, func(decided *egress.Grant) (rc *remoteCall, err error) {
		res, rc, err = m.remote.call(ctx, call.org, c.Name, c.MCPURL, call.token, tool, args, progress, decided)
		return rc, err
	})
	if failed != nil {
		return failed
	}
	return res
}

// callRemote is the part of a remote tool call that does not depend on how
// it is sent: the credential's state, Vault's decision and the call's
// approval, the log line, and the tool error the agent gets when it fails
// (nil when send succeeded).
func (m *mcpServer) callRemote(ctx context.Context, call *mcpCall, c *agentCred, tool string, args json.RawMessage,
	send func(decided *egress.Grant) (*remoteCall, error)) *mcp.CallToolResult {
	if why := c.blocked(); why != "" {
		return m.needsPerson(call, c, why)
	}
	decided, held := m.broker.approveTool(ctx, call.org, c.Name, call.token, tool, args)
	if held != "" {
		return toolError(held)
	}
	start := time.Now()
	rc, err := send(decided)
	status := http.StatusOK
	if err != nil {
		refusal, _, remoteStatus := rc.outcome()
		switch {
		case refusal != nil:
			status = refusal.Status
		case remoteStatus != 0:
			status = remoteStatus
		default:
			status = http.StatusBadGateway
		}
	}
	m.broker.logger.Info("broker", "method", contract.MethodTool, "path", "/broker/"+call.org+"/"+c.Name+"/…", "tool", tool,
		"status", status, "via", "mcp", "duration_ms", time.Since(start).Milliseconds())
	if err != nil {
		msg := m.remoteFailure(rc, c, err)
		if refusal, dead, _ := rc.outcome(); dead || credentialRefusal(refusal) || rc.scopeNeeded() != "" {
			return m.needsPerson(call, c, msg)
		}
		return toolError(msg)
	}
	return nil
}

// credentialRefusal says whether the engine refused the call for the
// credential's sake (disconnected, deleted, a grant it cannot refresh),
// which a person fixes, rather than for the agent's token or rules.
func credentialRefusal(e *egress.Error) bool {
	return e != nil && e.Status >= 400 && e.Status < 500 && e.Status != http.StatusUnauthorized &&
		e.Status != http.StatusTooManyRequests && !strings.HasPrefix(e.Msg, "permission denied")
}

// remoteFailure says why a remote request failed, without the remote
// server's own words (which are not the agent's to see when they concern
// the grant).
func (m *mcpServer) remoteFailure(rc *remoteCall, c *agentCred, err error) string {
	if rc != nil {
		refusal, dead, status := rc.outcome()
		switch {
		case dead:
			return fmt.Sprintf("%s's MCP server refused credential %s (revoked or expired at the provider): reconnect it", serviceTitle(c), c.Name)
		case refusal != nil:
			return fmt.Sprintf("the broker refused the call (%d): %s", refusal.Status, refusal.Msg)
		case rc.scopeNeeded() != "":
			return fmt.Sprintf("%s's MCP server needs scope %s, which credential %s was not granted: a person must reconnect it with that scope", serviceTitle(c), rc.scopeNeeded(), c.Name)
		case status != 0:
			return fmt.Sprintf("%s's MCP server answered %d %s", serviceTitle(c), status, http.StatusText(status))
		}
	}
	if e := jsonRPCError(err); e != "" {
		return fmt.Sprintf("%s's MCP server refused the call: %s", serviceTitle(c), e)
	}
	return fmt.Sprintf("%s's MCP server could not be reached or did not answer", serviceTitle(c))
}

// jsonRPCError is the remote server's JSON-RPC error message in err, if
// that is what it is (an unknown tool, arguments it refused).
func jsonRPCError(err error) string {
	var e *jsonrpc.Error
	if errors.As(err, &e) {
		return egress.Truncate(e.Message, 500)
	}
	return ""
}

// namesParamHeaders says whether schema names an argument's header
// (x-mcp-header) anywhere in it.
func namesParamHeaders(schema any) bool {
	raw, err := json.Marshal(schema)
	return err != nil || bytes.Contains(raw, []byte(`"x-mcp-header"`))
}
