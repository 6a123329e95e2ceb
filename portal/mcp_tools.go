package portal

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/portal/provision"
)

// Which credentials an agent's token may use, as MCP tools. Vault decides:
// the token's own resultant ACL names the credentials it may update under
// proxy/ or mail/ (and the rules that narrow them), and reading each
// credential's proxy/<cred> or mail/<cred> with the same token describes it
// (service, base URL, status). The list is kept for toolListReuse per
// token; every tool call is still authorized by Vault on its own.

// toolListReuse is how long one token's tool list is reused, as the edge
// reuses a sealed injection.
const toolListReuse = 15 * time.Second

// maxToolLists bounds the cache; past it the cache starts over.
const maxToolLists = 10000

// agentCred is one credential an agent may use, as the engine describes it.
type agentCred struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Description string `json:"description"`
	Service     string `json:"service"`
	ServiceName string `json:"service_display_name"`
	ServiceDesc string `json:"service_description"`
	DocsURL     string `json:"docs_url"`
	BaseURL     string `json:"base_url"`
	Status      string `json:"status"`
	Reason      string `json:"status_reason"`
	Use         string `json:"use"`
	// MCPURL is the service's remote MCP server, whose tools the agent
	// may call as <cred>.<tool>.
	MCPURL string `json:"mcp_url"`
	// HTTP says whether the token may call the service's HTTP API; Rules
	// are the calls it may make, "GET /v1/balance", empty meaning any.
	HTTP  bool     `json:"-"`
	Rules []string `json:"-"`
	// Tools are the remote tools the token may call; remote the remote
	// server's tools it may, remoteErr why they could not be listed.
	Tools     toolRules   `json:"-"`
	remote    []*mcp.Tool `json:"-"`
	remoteErr string      `json:"-"`
	// Unusable says why the engine would not describe it (deleted, or
	// created again after the agent was given it).
	Unusable string `json:"-"`
}

// usable says why a call cannot work now ("" when it may): a credential
// that is not connected, disconnected or expired needs a person first.
func (c *agentCred) blocked() string {
	switch {
	case c.Unusable != "":
		return c.Unusable
	case c.Status == "disconnected", c.Status == "expired":
		return "credential " + c.Name + " is " + c.Status
	case c.Status == "needs_attention" && c.Reason == "not connected yet":
		return "credential " + c.Name + " is not connected yet"
	}
	return ""
}

type toolListEntry struct {
	list     *toolList
	useUntil time.Time
}

// toolList is one token's credentials and the MCP server built from them,
// reused for every request of the token while the list is: building a
// server (its tools' schemas) costs more than the call it serves.
type toolList struct {
	creds  []*agentCred
	server *mcp.Server
	// remote are the remote tools the server offers, by their name on it.
	remote map[string]remoteTool
	// resource is the resource (RFC 8707) the token was minted for by the
	// portal's OAuth server, "" for other tokens; grant its MCP grant.
	resource, grant string
	// role is the AppRole role the token logged in with: its agent.
	role string
	// org is the org whose MCP server it is.
	org string
}

// toolLists caches each token's credentials by tokenKey.
type toolLists struct {
	mu      sync.Mutex
	entries map[string]toolListEntry
}

func (t *toolLists) get(key string, now time.Time) (*toolList, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[key]
	if !ok || !now.Before(e.useUntil) {
		return nil, false
	}
	return e.list, true
}

func (t *toolLists) put(key string, list *toolList, until time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.entries == nil || len(t.entries) >= maxToolLists {
		t.entries = map[string]toolListEntry{}
	}
	t.entries[key] = toolListEntry{list: list, useUntil: until}
}

// forgetGrant drops the lists of MCP grant's tokens: its client was
// disconnected, and its next request must be refused here at once.
func (t *toolLists) forgetGrant(grant string) {
	t.forget(func(l *toolList) bool { return l.grant == grant })
}

// forgetRole drops the lists of every token of an agent's role: the agent
// was removed, and its tokens' next requests go to Vault.
func (t *toolLists) forgetRole(role string) {
	t.forget(func(l *toolList) bool { return l.role == role })
}

func (t *toolLists) forget(match func(*toolList) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, e := range t.entries {
		if match(e.list) {
			delete(t.entries, k)
		}
	}
}

// toolsFor returns the credentials token may use in org, with their MCP
// server.
func (m *mcpServer) toolsFor(ctx context.Context, org, token string) (*toolList, *egress.Error) {
	key := tokenKey(token, org, "\x00mcp")
	if list, ok := m.lists.get(key, time.Now()); ok {
		return list, nil
	}
	ctx, cancel := context.WithTimeout(ctx, edgeVaultTimeout)
	defer cancel()
	var acl struct {
		Data struct {
			Root       bool                      `json:"root"`
			ExactPaths map[string]aclPermissions `json:"exact_paths"`
			GlobPaths  map[string]aclPermissions `json:"glob_paths"`
		} `json:"data"`
	}
	// The token's own expiry bounds how long its list is reused, so an
	// expired token is refused at once.
	var self struct {
		Data struct {
			ExpireTime string            `json:"expire_time"`
			Meta       map[string]string `json:"meta"`
		} `json:"data"`
	}
	var aclFail, selfFail *egress.Error
	var wg sync.WaitGroup
	wg.Go(func() {
		aclFail = m.broker.vaultDo(ctx, token, http.MethodGet, &url.URL{Path: "/v1/sys/internal/ui/resultant-acl"}, nil, &acl, mcpRefusal)
	})
	wg.Go(func() {
		selfFail = m.broker.vaultDo(ctx, token, http.MethodGet, &url.URL{Path: "/v1/auth/token/lookup-self"}, nil, &self, mcpRefusal)
	})
	wg.Wait()
	if aclFail != nil {
		return nil, aclFail
	}
	useUntil := time.Now().Add(toolListReuse)
	if selfFail == nil && self.Data.ExpireTime != "" {
		if exp, err := time.Parse(time.RFC3339Nano, self.Data.ExpireTime); err == nil && exp.Before(useUntil) {
			useUntil = exp
		}
	}
	if acl.Data.Root {
		return nil, &egress.Error{Status: http.StatusForbidden, Permanent: true, Msg: "this is a root token: the MCP server serves agents' tokens, whose policies name the credentials they may use"}
	}
	granted := grantedCreds(org, acl.Data.ExactPaths, acl.Data.GlobPaths)

	creds := make([]*agentCred, 0, len(granted))
	for name, g := range granted {
		creds = append(creds, &agentCred{Name: name, Use: g.use, Rules: g.rules, HTTP: g.http, Tools: g.tools})
	}
	sort.Slice(creds, func(i, j int) bool { return creds[i].Name < creds[j].Name })
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(8)
	for _, c := range creds {
		eg.Go(func() error {
			m.describe(ectx, org, token, c)
			return nil
		})
	}
	_ = eg.Wait()
	eg, ectx = errgroup.WithContext(ctx)
	eg.SetLimit(8)
	for _, c := range creds {
		if c.MCPURL != "" && c.blocked() == "" && len(c.Tools.allow) > 0 {
			eg.Go(func() error {
				m.listRemote(ectx, org, token, c)
				return nil
			})
		}
	}
	_ = eg.Wait()
	list := &toolList{org: org, creds: creds, resource: self.Data.Meta[provision.MetaMCPResource], grant: self.Data.Meta[provision.MetaMCPGrant],
		role: self.Data.Meta["role_name"]}
	if len(creds) > 0 {
		list.server, list.remote = m.newServer(org, creds)
	}
	m.lists.put(key, list, useUntil)
	return list, nil
}

// describe reads the credential's description with the agent's token.
func (m *mcpServer) describe(ctx context.Context, org, token string, c *agentCred) {
	keep := *c
	path := contract.UsePath(org, keep.Use, c.Name)
	var out struct {
		Data agentCred `json:"data"`
	}
	fail := m.broker.vaultDo(ctx, token, http.MethodGet, &url.URL{Path: "/v1/" + path}, nil, &out, mcpRefusal)
	if fail != nil {
		c.Unusable = fail.Msg
		return
	}
	*c = out.Data
	c.Name, c.Use, c.HTTP, c.Rules, c.Tools = strings.TrimSpace(c.Name), keep.Use, keep.HTTP, keep.Rules, keep.Tools
}

type aclPermissions struct {
	Capabilities []string `json:"capabilities"`
}

type grant struct {
	use string
	// http says whether the token may call the service's HTTP API; rules
	// narrow it ("GET /v1/balance"), nil meaning any call.
	http  bool
	rules []string
	tools toolRules
}

// toolRules are the remote MCP tools a token may call, as its ACL names
// them: a tool's name, or a prefix ending in '*'. Vault decides each call;
// these only keep the tools it would refuse out of the agent's list.
type toolRules struct {
	allow, deny []string
}

func (r toolRules) allows(tool string) bool {
	return matchTool(r.allow, tool) && !matchTool(r.deny, tool)
}

func matchTool(patterns []string, tool string) bool {
	for _, p := range patterns {
		if prefix, glob := strings.CutSuffix(p, "*"); glob && strings.HasPrefix(tool, prefix) || p == tool {
			return true
		}
	}
	return false
}

// grantedCreds reads the credentials and rules out of the token's ACL
// paths: orgs/<org>/proxy/<cred>[/<METHOD>/<path>],
// orgs/<org>/proxy/<cred>/TOOL/<tool> and orgs/<org>/mail/<cred> that the
// token may update, and the tools it is denied.
func grantedCreds(org string, exact, glob map[string]aclPermissions) map[string]*grant {
	out := map[string]*grant{}
	add := func(p string, perms aclPermissions, isGlob bool) {
		deny := slices.Contains(perms.Capabilities, "deny")
		if !deny && !slices.Contains(perms.Capabilities, "update") && !slices.Contains(perms.Capabilities, "root") {
			return
		}
		for _, use := range []string{contract.UseProxy, contract.UseMail} {
			rest, ok := strings.CutPrefix(p, contract.UsePath(org, use, ""))
			if !ok {
				continue
			}
			cred, rule, _ := strings.Cut(rest, "/")
			if !contract.ValidCredName(cred) {
				return
			}
			if deny {
				if tool, ok := strings.CutPrefix(rule, contract.MethodTool+"/"); ok && use == contract.UseProxy {
					if out[cred] == nil {
						out[cred] = &grant{use: use}
					}
					if isGlob {
						tool += "*"
					}
					out[cred].tools.deny = append(out[cred].tools.deny, tool)
				}
				return
			}
			g := out[cred]
			if g == nil {
				g = &grant{use: use}
				out[cred] = g
			}
			if use == contract.UseMail {
				g.use = contract.UseMail
				return
			}
			g.addRule(rule, isGlob)
		}
	}
	for p, perms := range exact {
		add(p, perms, false)
	}
	for p, perms := range glob {
		add(p, perms, true)
	}
	for name, g := range out {
		if !g.http && len(g.tools.allow) == 0 && g.use != contract.UseMail {
			delete(out, name) // denied tools only
			continue
		}
		if slices.Contains(g.rules, "any") {
			g.rules = nil
		}
		sort.Strings(g.rules)
		sort.Strings(g.tools.allow)
	}
	return out
}

// addRule adds one ACL path below proxy/<cred>/ (rule, "" for the
// credential's own path) to what the grant allows.
func (g *grant) addRule(rule string, isGlob bool) {
	method, path, _ := strings.Cut(rule, "/")
	switch {
	case method == contract.MethodTool && !isGlob && path == "":
		// Listing the tools: calling none.
	case method == contract.MethodTool:
		if isGlob {
			path += "*"
		}
		g.tools.allow = append(g.tools.allow, path)
	default:
		g.http = true
		r := describeRule(rule, isGlob)
		if r == "" {
			// Any method and path: TOOL and every tool too.
			g.tools.allow = append(g.tools.allow, "*")
			r = "any"
		}
		g.rules = append(g.rules, r)
	}
}

// describeRule turns "GET/v1/charges/" (a glob) into "GET /v1/charges/*";
// "" when the path allows any call.
func describeRule(rule string, isGlob bool) string {
	if rule == "" {
		return ""
	}
	method, path, slash := strings.Cut(rule, "/")
	if method == "" || !slash || (method == "+" && path == "" && isGlob) {
		return ""
	}
	if method == "+" {
		method = "any method"
	}
	path = "/" + path
	if isGlob {
		path += "*"
	}
	return method + " " + path
}

// mcpRefusal maps Vault's refusals of the MCP server's own reads: a
// token Vault does not take is 401; a token that may not read its ACL
// belongs to an agent made before MCP, or is no agent's.
func mcpRefusal(status int, errs []string) *egress.Error {
	msgs := unwrapVaultErrors(errs)
	switch {
	case status == http.StatusForbidden && slices.Contains(msgs, "invalid token"):
		return unauthorized("the Vault token is invalid or expired: log in again (auth/approle/login)")
	case status == http.StatusForbidden && slices.Contains(msgs, "permission denied"):
		return &egress.Error{Status: http.StatusForbidden, Permanent: true, Msg: "permission denied: this token may not list what it may use; an agent made before MCP support is created again to get it"}
	case status == http.StatusNotFound:
		return &egress.Error{Status: http.StatusNotFound, Permanent: true, Msg: "the credential does not exist (any more)"}
	case status == http.StatusForbidden:
		return &egress.Error{Status: status, Permanent: true, Msg: strings.Join(msgs, "; ")}
	}
	return vaultRefusal(status, errs, &edgeCall{}, "")
}
