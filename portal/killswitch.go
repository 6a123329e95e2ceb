package portal

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
)

// The kill switch page: an org admin stops every agent of the org (or
// one), and revokes the org's OAuth grants (or one credential's) at their
// providers. The agents are stopped here with the person's own token,
// which needs the org's agents policy; the grants by the engine, as a job
// whose receipts this page shows.

type killSwitchPage struct {
	layout
	// CanPull says the person may start the engine's job (org admins);
	// CanStopAgents that they hold the agents policy too.
	CanPull, CanStopAgents bool
	Agents                 []string
	Grants                 []string
	Values                 map[string]string
	Error                  string
}

type revokeJobPage struct {
	layout
	ID, Scope, Target, State, StartedAt, StartedBy, FinishedAt string
	Revoked, NotRevocable, Failed, Pending                     int
	Items                                                      []revokeItemRow
}

type revokeItemRow struct {
	Kind, Name, Outcome, Detail, Receipt string
}

func (s *Server) killSwitchPageFor(r *http.Request, p *person) (*killSwitchPage, error) {
	org, _ := orgOf(r)
	ctx := r.Context()
	l, err := s.frameFor(ctx, p, org, "Kill switch", "kill-switch")
	if err != nil {
		return nil, err
	}
	page := &killSwitchPage{layout: l, Values: map[string]string{"scope": "org"}}
	probe := contract.Mount(org) + "/revoke-all"
	if caps, err := p.v.capabilities(ctx, probe, "auth/approle/role"); err == nil {
		page.CanPull = can(caps[probe], "update")
		page.CanStopAgents = can(caps["auth/approle/role"], "list")
	}
	if page.CanStopAgents {
		agents, err := provision.ListAgents(ctx, p.v.c, org)
		if err != nil {
			return nil, err
		}
		for _, a := range agents {
			page.Agents = append(page.Agents, a.Name)
		}
	}
	creds, err := p.v.listCreds(ctx, org, credFilter{Type: "oauth2"})
	if err != nil {
		return nil, err
	}
	for _, c := range creds {
		page.Grants = append(page.Grants, c.Name)
	}
	return page, nil
}

func (s *Server) handleKillSwitch(w http.ResponseWriter, r *http.Request, p *person) {
	page, err := s.killSwitchPageFor(r, p)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	s.render(w, r, http.StatusOK, "killswitch.html", page)
}

// handlePullKillSwitch stops the agents, starts the engine's job and shows
// it; an unconfirmed or refused kill switch does nothing and says why.
func (s *Server) handlePullKillSwitch(w http.ResponseWriter, r *http.Request, p *person) {
	if err := r.ParseForm(); err != nil {
		s.renderError(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	org, _ := orgOf(r)
	f := r.PostForm
	k := provision.KillSwitch{
		Scope: f.Get("scope"), Agent: strings.TrimSpace(f.Get("agent")), Credential: strings.TrimSpace(f.Get("credential")),
		IncludeGrants: f.Get("include_grants") == "on" || f.Get("scope") == "credential",
		Confirm:       strings.TrimSpace(f.Get("confirm")),
	}
	switch k.Scope {
	case "agent":
		k.Credential = ""
	case "credential":
		k.Agent = ""
	default:
		k.Agent, k.Credential = "", ""
	}
	page, err := s.killSwitchPageFor(r, p)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	k.SkipAgents = !page.CanStopAgents
	msg := ""
	id, receipts, err := provision.PullKillSwitch(r.Context(), p.v.c, org, k)
	stopped := 0
	for _, rc := range receipts {
		if rc.Outcome == provision.OutcomeRevoked {
			stopped++
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, provision.ErrNotConfirmed) || errors.Is(err, provision.ErrAgentNotFound):
		msg = "Nothing was revoked: " + err.Error() + "."
	default:
		status, vmsg := vaultError(err)
		if status == 0 {
			vmsg = err.Error()
		}
		if stopped == 0 && (status == http.StatusForbidden || status >= 500) {
			s.fail(w, r, p, err)
			return
		}
		msg = "Nothing more was revoked: " + vmsg
		if stopped > 0 {
			// The person must know the agents are stopped all the same.
			msg = fmt.Sprintf("%d agents were stopped, but the engine's part failed, so no grant was revoked and no job was kept: %s", stopped, vmsg)
		}
	}
	if msg != "" {
		page.Error = msg
		for _, key := range []string{"scope", "agent", "credential", "include_grants"} {
			page.Values[key] = f.Get(key)
		}
		s.render(w, r, http.StatusBadRequest, "killswitch.html", page)
		return
	}
	s.setFlash(w, r, "ok", "The kill switch is pulled: its receipts follow.")
	http.Redirect(w, r, "/orgs/"+org+"/kill-switch/"+id, http.StatusSeeOther)
}

// handleRevokeJob shows a kill-switch job and its receipts; the page
// reloads itself while the job runs.
func (s *Server) handleRevokeJob(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	id := mux.Vars(r)["job"]
	ctx := r.Context()
	l, err := s.frameFor(ctx, p, org, "Kill switch "+id, "kill-switch")
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	d, err := p.v.read(ctx, contract.Mount(org)+"/revoke-all/"+id)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	if d == nil {
		s.renderError(w, r, http.StatusNotFound, "There is no kill-switch job "+id+".")
		return
	}
	page := &revokeJobPage{layout: l, ID: id, Scope: str(d["scope"]), State: str(d["state"]),
		StartedAt: str(d["started_at"]), StartedBy: str(d["started_by"]), FinishedAt: str(d["finished_at"]),
		Revoked: intOf(d["revoked"]), NotRevocable: intOf(d["not_revocable"]), Failed: intOf(d["failed"]), Pending: intOf(d["pending"])}
	page.Target = org
	if a := str(d["agent"]); a != "" {
		page.Target = a
	} else if c := str(d["credential"]); c != "" {
		page.Target = c
	}
	items, _ := d["items"].([]any)
	for _, it := range items {
		m, _ := it.(map[string]any)
		row := revokeItemRow{Kind: str(m["kind"]), Name: str(m["name"]), Outcome: str(m["outcome"]), Detail: str(m["detail"])}
		if rc, ok := m["receipt"].(map[string]any); ok {
			row.Receipt = receiptText(rc)
		}
		page.Items = append(page.Items, row)
	}
	s.render(w, r, http.StatusOK, "revoke_job.html", page)
}
