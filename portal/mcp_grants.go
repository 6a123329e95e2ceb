package portal

import (
	"context"
	"net/http"
	"sort"

	"github.com/gorilla/mux"

	"github.com/clankteam/credentials/portal/provision"
)

// The MCP clients connected to an org's agents, on the agents page, and
// disconnecting one: the grant goes from the engine, its secret ID from
// the agent's role, and its live tokens are revoked, so its next call is
// refused.

// mcpConnection is one connected client, as the agents page shows it.
type mcpConnection struct {
	ID, Agent, Client, RedirectURI, State, Ended string
	// ConnectedAt and LastUsedAt are RFC 3339 times, "" when not yet.
	ConnectedAt, LastUsedAt string
}

// mcpConnections lists org's connected clients; nil when the person may
// not see them.
func (s *Server) mcpConnections(ctx context.Context, p *person, org string) []mcpConnection {
	sec, err := p.v.c.Logical().ListWithContext(ctx, provision.MCPGrantsPath(org))
	if err != nil || sec == nil {
		return nil
	}
	var out []mcpConnection
	eachListed(sec, func(id string, info map[string]any) {
		c := mcpConnection{ID: id, Agent: str(info["agent"]), Client: str(info["client_name"]),
			RedirectURI: str(info["redirect_uri"]), State: str(info["state"]), Ended: str(info["ended"]),
			ConnectedAt: str(info["connected_at"]), LastUsedAt: str(info["last_used_at"])}
		if c.State != "pending" && c.State != "expired" {
			out = append(out, c)
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ConnectedAt > out[j].ConnectedAt })
	return out
}

func (s *Server) handleDisconnectMCP(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	grant := mux.Vars(r)["grant"]
	ctx := r.Context()
	agent, n, err := provision.EndMCPGrant(ctx, p.v.c, org, grant)
	if err != nil && agent == "" {
		s.fail(w, r, p, err)
		return
	}
	s.mcp.lists.forgetGrant(grant)
	if err != nil {
		s.logger.Warn("mcp disconnect: ending the client's tokens", "org", org, "grant", grant, "error", err)
		_, why := vaultError(err)
		s.setFlash(w, r, "error", "The client is disconnected, but its live tokens could not all be revoked (they expire within their TTL): "+why)
	} else {
		s.logger.Info("mcp client disconnected", "org", org, "agent", agent, "grant", grant, "tokens_revoked", n)
		s.setFlash(w, r, "ok", "The client is disconnected: its tokens no longer work.")
	}
	http.Redirect(w, r, "/orgs/"+org+"/agents", http.StatusSeeOther)
}
