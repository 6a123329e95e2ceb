package portal

import (
	"fmt"
	"net/http"

	"github.com/gorilla/mux"
)

// confirmPage asks before a destructive action; the action happens only
// when its form is posted.
type confirmPage struct {
	layout
	Heading string
	Body    string
	Action  string
	Button  string
	Cancel  string
}

// destructive actions on a credential, each behind confirmPage.
var credConfirms = map[string]struct{ heading, body, button string }{
	"disconnect": {
		heading: "Disconnect %s?",
		body:    "The grant is revoked at the provider and its tokens are dropped. Agents using %s stop working until someone connects it again.",
		button:  "Disconnect",
	},
	"delete": {
		heading: "Delete %s?",
		body:    "The credential is removed for good (an OAuth grant is revoked at the provider first). Agents using %s stop working. This cannot be undone.",
		button:  "Delete",
	},
}

// handleCredConfirm shows the confirmation of a disconnect or delete.
func (s *Server) handleCredConfirm(action string) personHandler {
	text := credConfirms[action]
	return func(w http.ResponseWriter, r *http.Request, p *person) {
		org, _ := orgOf(r)
		name := mux.Vars(r)["name"]
		l, err := s.frameFor(r.Context(), p, org, text.button+" "+name, "creds")
		if err != nil {
			s.fail(w, r, p, err)
			return
		}
		s.render(w, r, http.StatusOK, "confirm.html", &confirmPage{
			layout:  l,
			Heading: fmt.Sprintf(text.heading, name),
			Body:    fmt.Sprintf(text.body, name),
			Action:  credHref(org, name) + "/" + action,
			Button:  text.button,
			Cancel:  credHref(org, name),
		})
	}
}

func (s *Server) handleDisconnect(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	data, err := p.v.write(r.Context(), credPath(org, name)+"/disconnect", nil)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	s.setFlash(w, r, "ok", joinSentences("Disconnected "+name+".", receiptText(data)))
	http.Redirect(w, r, credHref(org, name), http.StatusSeeOther)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	data, err := p.v.delete(r.Context(), credPath(org, name))
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	s.setFlash(w, r, "ok", joinSentences("Deleted "+name+".", receiptText(data)))
	http.Redirect(w, r, listHref(org, "", "", "", ""), http.StatusSeeOther)
}

// handleCredAction runs verify or refresh, which change nothing a person
// would want to confirm, and reports the outcome on the credential's page.
func (s *Server) handleCredAction(action string) personHandler {
	return func(w http.ResponseWriter, r *http.Request, p *person) {
		org, _ := orgOf(r)
		name := mux.Vars(r)["name"]
		data, err := p.v.write(r.Context(), credPath(org, name)+"/"+action, nil)
		back := credHref(org, name)
		if err != nil {
			status, msg := vaultError(err)
			if status == http.StatusForbidden || status >= 500 {
				s.fail(w, r, p, err)
				return
			}
			s.setFlash(w, r, "error", fmt.Sprintf("%s of %s failed: %s", actionNoun(action), name, msg))
			http.Redirect(w, r, back, http.StatusSeeOther)
			return
		}
		msg := fmt.Sprintf("%s of %s succeeded.", actionNoun(action), name)
		if data["verified"] == false {
			reason := str(data["status_reason"])
			if reason == "" {
				reason = "the service refused it"
			}
			s.setFlash(w, r, "error", fmt.Sprintf("%s did not work: %s.", name, reason))
			http.Redirect(w, r, back, http.StatusSeeOther)
			return
		}
		if st := str(data["status"]); st != "" && st != "active" {
			msg = fmt.Sprintf("%s of %s done: %s", actionNoun(action), name, statusLabel(st))
			if reason := str(data["status_reason"]); reason != "" {
				msg += " (" + reason + ")"
			}
			msg += "."
		}
		s.setFlash(w, r, "ok", msg)
		http.Redirect(w, r, back, http.StatusSeeOther)
	}
}

func actionNoun(action string) string {
	switch action {
	case "verify":
		return "Verification"
	case "refresh":
		return "Refresh"
	}
	return action
}

func joinSentences(a, b string) string {
	if b == "" {
		return a
	}
	return a + " " + b
}
