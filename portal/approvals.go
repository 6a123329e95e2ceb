package portal

import (
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/clankteam/credentials/internal/contract"
)

// The approvals queue: calls of agents held for a person's decision, the
// waiting ones first. Approving lets the same call through once; the
// person who decided is recorded with the call.

type approvalRow struct {
	ID, Agent, Credential, Ingress, Call, Preview, State string
	CreatedAt, ExpiresAt, DecidedBy, DecidedAt, Reason   string
	BodyBytes                                            int
}

func approvalRowOf(id string, d map[string]any) approvalRow {
	return approvalRow{ID: id, Agent: str(d["agent"]), Credential: str(d["credential"]), Ingress: str(d["ingress"]),
		Call: str(d["call"]), Preview: str(d["preview"]), State: str(d["state"]), CreatedAt: str(d["created_at"]),
		ExpiresAt: str(d["expires_at"]), DecidedBy: str(d["decided_by"]), DecidedAt: str(d["decided_at"]),
		Reason: str(d["reason"]), BodyBytes: intOf(d["body_bytes"])}
}

type approvalsPage struct {
	layout
	Approvals []approvalRow
	CanDecide bool
}

type approvalPage struct {
	layout
	approvalRow
	CanDecide bool
}

func (s *Server) handleApprovals(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	ctx := r.Context()
	l, err := s.frameFor(ctx, p, org, "Approvals", "approvals")
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	sec, err := p.v.c.Logical().ListWithContext(ctx, contract.Mount(org)+"/approvals/")
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	page := &approvalsPage{layout: l, CanDecide: s.canDecide(r, p, org)}
	eachListed(sec, func(id string, info map[string]any) {
		page.Approvals = append(page.Approvals, approvalRowOf(id, info))
	})
	s.render(w, r, http.StatusOK, "approvals.html", page)
}

func (s *Server) canDecide(r *http.Request, p *person, org string) bool {
	probe := contract.Mount(org) + "/approvals/000000000000000000000000/approve"
	caps, err := p.v.capabilities(r.Context(), probe)
	return err == nil && can(caps[probe], "update")
}

func (s *Server) handleApproval(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	id := mux.Vars(r)["approval"]
	ctx := r.Context()
	l, err := s.frameFor(ctx, p, org, "Approval "+id, "approvals")
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	d, err := p.v.read(ctx, contract.Mount(org)+"/approvals/"+id)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	if d == nil {
		s.renderError(w, r, http.StatusNotFound, "There is no approval "+id+".")
		return
	}
	s.render(w, r, http.StatusOK, "approval.html", &approvalPage{layout: l, approvalRow: approvalRowOf(id, d), CanDecide: s.canDecide(r, p, org)})
}

// handleDecideApproval approves or denies a held call.
func (s *Server) handleDecideApproval(w http.ResponseWriter, r *http.Request, p *person) {
	if err := r.ParseForm(); err != nil {
		s.renderError(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	org, _ := orgOf(r)
	vars := mux.Vars(r)
	id, decision := vars["approval"], vars["decision"]
	data := map[string]any{}
	if reason := strings.TrimSpace(r.PostForm.Get("reason")); reason != "" {
		data["reason"] = reason
	}
	back := "/orgs/" + org + "/approvals/" + id
	if _, err := p.v.write(r.Context(), contract.Mount(org)+"/approvals/"+id+"/"+decision, data); err != nil {
		status, msg := vaultError(err)
		if status == http.StatusForbidden || status >= 500 {
			s.fail(w, r, p, err)
			return
		}
		s.setFlash(w, r, "error", "Not decided: "+msg)
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	if decision == "approve" {
		s.setFlash(w, r, "ok", "Approved: the agent's same call goes through once.")
	} else {
		s.setFlash(w, r, "ok", "Denied: the agent is told so.")
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}
