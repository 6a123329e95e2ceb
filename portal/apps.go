package portal

import (
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/clankteam/credentials/internal/contract"
)

// appsPage lists the org's OAuth client registrations and registers new
// ones. The client secret is write-only: the engine never returns it.
type appsPage struct {
	layout
	Apps []appInfo
	// OAuthServices are the services an app can be registered for.
	OAuthServices []serviceInfo
	ServiceNames  map[string]string
	RedirectURL   string
	CanWrite      bool
	Values        map[string]string
	Error         string
}

func (s *Server) appsPageFor(r *http.Request, p *person) (*appsPage, error) {
	org, _ := orgOf(r)
	ctx := r.Context()
	l, err := s.frameFor(ctx, p, org, "OAuth apps", "apps")
	if err != nil {
		return nil, err
	}
	apps, err := p.v.apps(ctx, org)
	if err != nil {
		return nil, err
	}
	svcs, err := p.v.services(ctx, org)
	if err != nil {
		return nil, err
	}
	page := &appsPage{layout: l, Apps: apps, ServiceNames: map[string]string{}, Values: map[string]string{}}
	for _, svc := range svcs {
		page.ServiceNames[svc.Name] = svc.DisplayName
		if contains(svc.Types, "oauth2") {
			page.OAuthServices = append(page.OAuthServices, svc)
		}
	}
	page.Values["service"] = r.URL.Query().Get("service")
	page.RedirectURL = s.callbackURL(r)
	if cfg, err := p.v.read(ctx, contract.Mount(org)+"/config"); err == nil && str(cfg["redirect_url"]) != "" {
		page.RedirectURL = str(cfg["redirect_url"])
	}
	probe := contract.Mount(org) + "/apps/new-app"
	if caps, err := p.v.capabilities(ctx, probe); err == nil {
		page.CanWrite = can(caps[probe], "create")
	}
	return page, nil
}

func (s *Server) handleApps(w http.ResponseWriter, r *http.Request, p *person) {
	page, err := s.appsPageFor(r, p)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	s.render(w, r, http.StatusOK, "apps.html", page)
}

// handleAddApp registers (or re-registers) an OAuth client.
func (s *Server) handleAddApp(w http.ResponseWriter, r *http.Request, p *person) {
	if err := r.ParseForm(); err != nil {
		s.renderError(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	org, _ := orgOf(r)
	f := r.PostForm
	name := strings.TrimSpace(f.Get("name"))
	data := map[string]any{
		"service":     strings.TrimSpace(f.Get("service")),
		"client_id":   strings.TrimSpace(f.Get("client_id")),
		"scopes":      strings.TrimSpace(f.Get("scopes")),
		"description": strings.TrimSpace(f.Get("description")),
	}
	if sec := f.Get("client_secret"); sec != "" {
		data["client_secret"] = sec
	}
	msg := ""
	if !contract.ValidCredName(name) {
		msg = "The name must be 1-128 lowercase letters, digits, '-', '_' or '.'."
	} else if _, err := p.v.write(r.Context(), contract.Mount(org)+"/apps/"+name, data); err != nil {
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
		page, err := s.appsPageFor(r, p)
		if err != nil {
			s.fail(w, r, p, err)
			return
		}
		page.Error = msg
		for _, k := range []string{"name", "service", "client_id", "scopes", "description"} {
			page.Values[k] = strings.TrimSpace(f.Get(k))
		}
		s.render(w, r, http.StatusBadRequest, "apps.html", page)
		return
	}
	s.setFlash(w, r, "ok", "Registered app "+name+".")
	http.Redirect(w, r, "/orgs/"+org+"/apps", http.StatusSeeOther)
}

func (s *Server) handleAppConfirmDelete(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	l, err := s.frameFor(r.Context(), p, org, "Delete app "+name, "apps")
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	s.render(w, r, http.StatusOK, "confirm.html", &confirmPage{
		layout:  l,
		Heading: "Delete the app " + name + "?",
		Body:    "Its client registration is removed from the org. Credentials still using it must be deleted first.",
		Action:  "/orgs/" + org + "/apps/" + name + "/delete",
		Button:  "Delete app",
		Cancel:  "/orgs/" + org + "/apps",
	})
}

func (s *Server) handleDeleteApp(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	if _, err := p.v.delete(r.Context(), contract.Mount(org)+"/apps/"+name); err != nil {
		if status, msg := vaultError(err); status == http.StatusBadRequest {
			s.setFlash(w, r, "error", msg)
			http.Redirect(w, r, "/orgs/"+org+"/apps", http.StatusSeeOther)
			return
		}
		s.fail(w, r, p, err)
		return
	}
	s.setFlash(w, r, "ok", "Deleted app "+name+".")
	http.Redirect(w, r, "/orgs/"+org+"/apps", http.StatusSeeOther)
}
