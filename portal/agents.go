package portal

import (
	"errors"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
)

// agentsPage lists the org's agents and creates new ones; only people
// holding the org's agents policy see the form.
type agentsPage struct {
	layout
	Agents  []provision.Agent
	Creds   []credSummary
	Values  map[string]string
	Checked map[string]bool
	Error   string
	// Created is set right after creating an agent: its login, shown once.
	Created   *provision.AgentLogin
	CreatedAs string
	BrokerURL string
	// MCPURL is the org's MCP server.
	MCPURL    string
	CanManage bool
	// Connections are the MCP clients people connected to the agents.
	Connections []mcpConnection
}

func (s *Server) agentsPageFor(r *http.Request, p *person) (*agentsPage, error) {
	org, _ := orgOf(r)
	ctx := r.Context()
	l, err := s.frameFor(ctx, p, org, "Agents", "agents")
	if err != nil {
		return nil, err
	}
	page := &agentsPage{layout: l, Values: map[string]string{"ttl": "15m"}, Checked: map[string]bool{},
		BrokerURL: s.publicBase(r) + "/broker/" + org, MCPURL: s.publicBase(r) + "/mcp/" + org}
	if page.Creds, err = p.v.listCreds(ctx, org, credFilter{}); err != nil {
		return nil, err
	}
	agents, err := provision.ListAgents(ctx, p.v.c, org)
	if status, _ := vaultError(err); err != nil && status != http.StatusForbidden {
		return nil, err
	}
	// Managing agents takes the org's agents policy, which only trusted
	// people hold; others see the page without the form.
	page.Agents, page.CanManage = agents, err == nil
	page.Connections = s.mcpConnections(ctx, p, org)
	return page, nil
}

func (s *Server) handleAgents(w http.ResponseWriter, r *http.Request, p *person) {
	page, err := s.agentsPageFor(r, p)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	s.render(w, r, http.StatusOK, "agents.html", page)
}

// handleAddAgent creates an agent and shows its login once, on this
// response only (never through a redirect or a cookie).
func (s *Server) handleAddAgent(w http.ResponseWriter, r *http.Request, p *person) {
	if err := r.ParseForm(); err != nil {
		s.renderError(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	org, _ := orgOf(r)
	spec, msg := agentSpecFrom(r)
	var login *provision.AgentLogin
	if msg == "" {
		var err error
		if login, err = provision.CreateAgent(r.Context(), p.v.c, org, spec); err != nil {
			if msg = agentErrorText(err); msg == "" {
				s.fail(w, r, p, err)
				return
			}
		}
	}
	page, err := s.agentsPageFor(r, p)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	if msg != "" {
		page.Error = msg
		page.Values["name"], page.Values["ttl"] = spec.Name, r.PostForm.Get("ttl")
		for _, f := range []string{"methods", "paths", "tools", "deny_tools"} {
			page.Values[f] = r.PostForm.Get(f)
		}
		for _, c := range spec.Creds {
			page.Checked[c] = true
		}
		s.render(w, r, http.StatusBadRequest, "agents.html", page)
		return
	}
	s.logger.Info("agent created", "org", org, "agent", spec.Name)
	page.Created, page.CreatedAs = login, spec.Name
	s.render(w, r, http.StatusOK, "agents.html", page)
}

// agentSpecFrom reads the agent form; the message says what is wrong.
func agentSpecFrom(r *http.Request) (provision.AgentSpec, string) {
	f := r.PostForm
	spec := provision.AgentSpec{Name: strings.TrimSpace(f.Get("name")), Creds: f["credential"], TokenTTL: provision.DefaultAgentTokenTTL}
	if !agentNamePattern.MatchString(spec.Name) {
		return spec, "The agent's name must be 1-48 lowercase letters, digits or '-', starting with a letter or digit."
	}
	if len(spec.Creds) == 0 {
		return spec, "Choose at least one credential the agent may use."
	}
	for _, c := range spec.Creds {
		if !contract.ValidCredName(c) {
			return spec, "A chosen credential name is not valid."
		}
	}
	for _, m := range strings.FieldsFunc(f.Get("methods"), isListSep) {
		spec.Methods = append(spec.Methods, strings.ToUpper(m))
	}
	spec.Paths = strings.FieldsFunc(f.Get("paths"), isListSep)
	spec.Tools = strings.FieldsFunc(f.Get("tools"), isListSep)
	spec.DenyTools = strings.FieldsFunc(f.Get("deny_tools"), isListSep)
	if ttl := strings.TrimSpace(f.Get("ttl")); ttl != "" {
		d, err := time.ParseDuration(ttl)
		if err != nil || d < time.Minute || d > 24*time.Hour {
			return spec, "The token lifetime must be a duration between 1m and 24h, such as 15m."
		}
		spec.TokenTTL = d
	}
	return spec, ""
}

func isListSep(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' }

func (s *Server) handleAgentConfirmDelete(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	l, err := s.frameFor(r.Context(), p, org, "Remove agent "+name, "agents")
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	s.render(w, r, http.StatusOK, "confirm.html", &confirmPage{
		layout:  l,
		Heading: "Remove the agent " + name + "?",
		Body:    "Its AppRole and policy are deleted and its MCP clients disconnected: the agent's tokens can no longer use any credential.",
		Action:  "/orgs/" + org + "/agents/" + name + "/delete",
		Button:  "Remove agent",
		Cancel:  "/orgs/" + org + "/agents",
	})
}

func (s *Server) handleDeleteAgent(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	if err := provision.DeleteAgent(r.Context(), p.v.c, org, name); err != nil {
		if msg := agentErrorText(err); msg != "" {
			s.setFlash(w, r, "error", msg)
			http.Redirect(w, r, "/orgs/"+org+"/agents", http.StatusSeeOther)
			return
		}
		s.fail(w, r, p, err)
		return
	}
	s.mcp.lists.forgetRole(provision.AgentName(org, name))
	s.setFlash(w, r, "ok", "Removed agent "+name+".")
	http.Redirect(w, r, "/orgs/"+org+"/agents", http.StatusSeeOther)
}

func (s *Server) apiAgents(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	agents, err := provision.ListAgents(r.Context(), p.v.c, org)
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"agents": agents})
}

func (s *Server) apiCreateAgent(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	var body struct {
		Name        string   `json:"name"`
		Credentials []string `json:"credentials"`
		Methods     []string `json:"methods"`
		Paths       []string `json:"paths"`
		Tools       []string `json:"tools"`
		DenyTools   []string `json:"deny_tools"`
		TokenTTL    string   `json:"token_ttl"`
	}
	if err := decodeJSON(w, r, &body); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "the body must be a JSON object: name, credentials, methods, paths, tools, deny_tools, token_ttl"})
		return
	}
	form := map[string][]string{"name": {body.Name}, "credential": body.Credentials,
		"methods": {strings.Join(body.Methods, ",")}, "paths": {strings.Join(body.Paths, ",")},
		"tools": {strings.Join(body.Tools, ",")}, "deny_tools": {strings.Join(body.DenyTools, ",")}, "ttl": {body.TokenTTL}}
	r.PostForm = form
	spec, msg := agentSpecFrom(r)
	if msg != "" {
		writeJSON(w, http.StatusBadRequest, apiError{Error: msg})
		return
	}
	login, err := provision.CreateAgent(r.Context(), p.v.c, org, spec)
	if err != nil {
		if msg := agentErrorText(err); msg != "" {
			writeJSON(w, http.StatusBadRequest, apiError{Error: msg})
			return
		}
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"name": spec.Name, "role_id": login.RoleID, "secret_id": login.SecretID,
		"secret_id_accessor": login.SecretIDAccessor})
}

func (s *Server) apiDeleteAgent(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	if err := provision.DeleteAgent(r.Context(), p.v.c, org, name); err != nil {
		if errors.Is(err, provision.ErrAgentNotFound) {
			writeJSON(w, http.StatusNotFound, apiError{Error: "no such agent"})
			return
		}
		s.apiFail(w, err)
		return
	}
	s.mcp.lists.forgetRole(provision.AgentName(org, name))
	writeJSON(w, http.StatusOK, map[string]any{"deleted": name})
}

// agentNamePattern is provision's rule for agent names, checked first so
// the form can say what is wrong before anything reaches Vault.
var agentNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,47}$`)

// agentErrorText is the message for a person when creating or removing an
// agent failed on their input; "" when it failed otherwise.
func agentErrorText(err error) string {
	switch {
	case errors.Is(err, provision.ErrBadAgentSpec), errors.Is(err, provision.ErrAgentExists), errors.Is(err, provision.ErrAgentNotFound):
		return strings.ToUpper(err.Error()[:1]) + err.Error()[1:] + "."
	}
	if status, msg := vaultError(err); status == http.StatusBadRequest {
		return msg
	}
	return ""
}
