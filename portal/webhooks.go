package portal

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/gorilla/mux"

	"github.com/clankteam/credentials/internal/contract"
)

// webhooksPage lists the org's webhooks, adds them, sends a test event to
// one, and shows the recent deliveries. A webhook's secret is write-only:
// the engine never returns it.
type webhooksPage struct {
	layout
	Webhooks   []webhookInfo
	Deliveries []deliveryInfo
	EventTypes []string
	CanWrite   bool
	Values     map[string]string
	Error      string
}

type webhookInfo struct {
	Name, URL, Credential, Description string
	Events                             []string
}

type deliveryInfo struct {
	At, Webhook, EventID, Type, Error, NextAttempt string
	Attempt, Status                                int
	Delivered                                      bool
}

// webhookEventTypes are the events a webhook can take, as the engine
// names them (path-help orgs/<org>/webhooks).
var webhookEventTypes = []string{"credential.connected", "credential.needs_attention", "credential.recovered",
	"credential.expiring", "credential.revoked", "credential.deleted", "agent.created", "agent.revoked", "approval.requested"}

func (s *Server) webhooksPageFor(r *http.Request, p *person) (*webhooksPage, error) {
	org, _ := orgOf(r)
	ctx := r.Context()
	l, err := s.frameFor(ctx, p, org, "Webhooks", "webhooks")
	if err != nil {
		return nil, err
	}
	page := &webhooksPage{layout: l, EventTypes: webhookEventTypes, Values: map[string]string{}}
	mount := contract.Mount(org)
	sec, err := p.v.c.Logical().ListWithContext(ctx, mount+"/webhooks/")
	if err != nil {
		return nil, err
	}
	eachListed(sec, func(name string, info map[string]any) {
		page.Webhooks = append(page.Webhooks, webhookInfo{
			Name: name, URL: str(info["url"]), Credential: str(info["credential"]),
			Description: str(info["description"]), Events: strs(info["events"]),
		})
	})
	sort.Slice(page.Webhooks, func(i, j int) bool { return page.Webhooks[i].Name < page.Webhooks[j].Name })
	log, err := p.v.read(ctx, mount+"/webhook-log")
	if err != nil {
		return nil, err
	}
	if list, ok := log["deliveries"].([]any); ok {
		for _, item := range list {
			d, _ := item.(map[string]any)
			page.Deliveries = append(page.Deliveries, deliveryInfo{
				At: str(d["at"]), Webhook: str(d["webhook"]), EventID: str(d["event_id"]), Type: str(d["type"]),
				Error: str(d["error"]), NextAttempt: str(d["next_attempt_at"]),
				Attempt: intOf(d["attempt"]), Status: intOf(d["status"]), Delivered: d["delivered"] == true,
			})
		}
	}
	probe := mount + "/webhooks/new-webhook"
	if caps, err := p.v.capabilities(ctx, probe); err == nil {
		page.CanWrite = can(caps[probe], "create")
	}
	return page, nil
}

func intOf(v any) int {
	var n int
	_, _ = fmt.Sscan(fmt.Sprint(v), &n)
	return n
}

func (s *Server) handleWebhooks(w http.ResponseWriter, r *http.Request, p *person) {
	page, err := s.webhooksPageFor(r, p)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	s.render(w, r, http.StatusOK, "webhooks.html", page)
}

// handleAddWebhook adds (or changes) a webhook.
func (s *Server) handleAddWebhook(w http.ResponseWriter, r *http.Request, p *person) {
	if err := r.ParseForm(); err != nil {
		s.renderError(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	org, _ := orgOf(r)
	f := r.PostForm
	name := strings.TrimSpace(f.Get("name"))
	data := map[string]any{
		"url":         strings.TrimSpace(f.Get("url")),
		"events":      strings.Join(f["events"], ","),
		"credential":  strings.TrimSpace(f.Get("credential")),
		"description": strings.TrimSpace(f.Get("description")),
	}
	if sec := strings.TrimSpace(f.Get("secret")); sec != "" {
		data["secret"] = sec
	}
	msg := ""
	if !contract.ValidCredName(name) {
		msg = "The name must be 1-128 lowercase letters, digits, '-', '_' or '.'."
	} else if _, err := p.v.write(r.Context(), contract.Mount(org)+"/webhooks/"+name, data); err != nil {
		status, vmsg := vaultError(err)
		if status != http.StatusBadRequest {
			clear(data)
			s.fail(w, r, p, err)
			return
		}
		msg = vmsg
	}
	clear(data)
	if msg != "" {
		page, err := s.webhooksPageFor(r, p)
		if err != nil {
			s.fail(w, r, p, err)
			return
		}
		page.Error = msg
		for _, k := range []string{"name", "url", "credential", "description"} {
			page.Values[k] = strings.TrimSpace(f.Get(k))
		}
		for _, e := range f["events"] {
			page.Values["event:"+e] = "on"
		}
		s.render(w, r, http.StatusBadRequest, "webhooks.html", page)
		return
	}
	s.setFlash(w, r, "ok", "Saved webhook "+name+". Send it a test event to check the receiver.")
	http.Redirect(w, r, "/orgs/"+org+"/webhooks", http.StatusSeeOther)
}

// handleTestWebhook sends the webhook a webhook.test event now and says
// how the receiver answered.
func (s *Server) handleTestWebhook(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	back := "/orgs/" + org + "/webhooks"
	data, err := p.v.write(r.Context(), contract.Mount(org)+"/webhooks/"+name+"/test", nil)
	if err != nil {
		status, msg := vaultError(err)
		if status == http.StatusForbidden || status >= 500 {
			s.fail(w, r, p, err)
			return
		}
		s.setFlash(w, r, "error", "The test of "+name+" could not be sent: "+msg)
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	if data["delivered"] == true {
		s.setFlash(w, r, "ok", fmt.Sprintf("The test event reached %s: it answered %v.", name, data["status"]))
	} else {
		s.setFlash(w, r, "error", fmt.Sprintf("The test event did not reach %s: %s.", name, str(data["error"])))
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

func (s *Server) handleWebhookConfirmDelete(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	l, err := s.frameFor(r.Context(), p, org, "Delete webhook "+name, "webhooks")
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	s.render(w, r, http.StatusOK, "confirm.html", &confirmPage{
		layout:  l,
		Heading: "Delete the webhook " + name + "?",
		Body:    "It is told of nothing more, and its events not yet delivered are dropped.",
		Action:  "/orgs/" + org + "/webhooks/" + name + "/delete",
		Button:  "Delete webhook",
		Cancel:  "/orgs/" + org + "/webhooks",
	})
}

func (s *Server) handleDeleteWebhook(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	if _, err := p.v.delete(r.Context(), contract.Mount(org)+"/webhooks/"+name); err != nil {
		s.fail(w, r, p, err)
		return
	}
	s.setFlash(w, r, "ok", "Deleted webhook "+name+".")
	http.Redirect(w, r, "/orgs/"+org+"/webhooks", http.StatusSeeOther)
}

// handleRefreshFailing retries every OAuth grant whose refresh is failing,
// at once (after a provider's outage, say), and says what came of it.
func (s *Server) handleRefreshFailing(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	back := "/orgs/" + org + "/creds"
	data, err := p.v.write(r.Context(), contract.Mount(org)+"/refresh-failing", nil)
	if err != nil {
		status, msg := vaultError(err)
		if status == http.StatusForbidden || status >= 500 {
			s.fail(w, r, p, err)
			return
		}
		s.setFlash(w, r, "error", "Retrying the failing refreshes failed: "+msg)
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	refreshed := strs(data["refreshed"])
	failed, _ := data["failed"].(map[string]any)
	var parts []string
	switch {
	case len(refreshed) == 0 && len(failed) == 0:
		parts = append(parts, "No refresh was failing.")
	case len(refreshed) > 0:
		parts = append(parts, "Refreshed: "+strings.Join(refreshed, ", ")+".")
	}
	names := make([]string, 0, len(failed))
	for n := range failed {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s still fails: %s.", n, str(failed[n])))
	}
	kind := "ok"
	if len(failed) > 0 {
		kind = "error"
	}
	s.setFlash(w, r, kind, strings.Join(parts, " "))
	http.Redirect(w, r, back, http.StatusSeeOther)
}
