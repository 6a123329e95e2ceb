package portal

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"

	"github.com/gorilla/mux"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
)

// pageSize is how many credentials one page of the list shows.
const pageSize = 200

// credRow is one line of the credentials table.
type credRow struct {
	credSummary
	ServiceName string
	// Fix is the action that fixes a credential needing attention.
	Fix *fixAction
}

// fixAction is a link (Href) or a button posting to Post.
type fixAction struct {
	Label string
	Href  string
	Post  string
}

type filterTab struct {
	Label   string
	Href    string
	Current bool
}

type credsPage struct {
	layout
	Rows      []credRow
	Type      string
	Q         string
	Status    string
	Tabs      []filterTab
	Attention int
	CanAdd    bool
	// CanRetryFailing: the person may retry every failing refresh at once.
	CanRetryFailing bool
	// Filtered says a filter is on, so an empty table means "no match"
	// rather than "no credentials yet".
	Filtered  bool
	NextHref  string
	ClearHref string
	// Statuses are the status filter's choices.
	Statuses []string
}

// statusOrder puts what needs a person's action first.
var statusOrder = map[string]int{"needs_attention": 0, "expired": 1, "disconnected": 2, "active": 3}

// handleCreds is the credentials page: the table, filtered by type and
// status and searched by name, all in the URL so a view can be shared.
func (s *Server) handleCreds(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	ctx := r.Context()
	q := r.URL.Query()
	f := credFilter{
		Type:   q.Get("type"),
		Q:      strings.ToLower(strings.TrimSpace(q.Get("q"))),
		Status: q.Get("status"),
		After:  q.Get("after"),
		Limit:  pageSize,
	}
	if f.Type != "" && !contains(credTypes, f.Type) {
		f.Type = ""
	}
	if _, ok := statusOrder[f.Status]; !ok {
		f.Status = ""
	}
	// The page needs four independent answers from Vault; asking at once
	// makes its latency the slowest one's rather than their sum.
	var (
		wg                sync.WaitGroup
		l                 layout
		list              []credSummary
		svcs              []serviceInfo
		caps              map[string][]string
		frameErr, listErr error
		svcsErr, capsErr  error
		probe             = credPath(org, "new-credential")
	)
	wg.Go(func() { l, frameErr = s.frameFor(ctx, p, org, "Credentials", "creds") })
	wg.Go(func() { list, listErr = p.v.listCreds(ctx, org, f) })
	wg.Go(func() { svcs, svcsErr = p.v.services(ctx, org) })
	retry := contract.Mount(org) + "/refresh-failing"
	wg.Go(func() { caps, capsErr = p.v.capabilities(ctx, probe, retry) })
	wg.Wait()
	if err := cmp.Or(frameErr, listErr); err != nil {
		s.fail(w, r, p, err)
		return
	}
	names := map[string]string{}
	if svcsErr == nil {
		for _, svc := range svcs {
			names[svc.Name] = svc.DisplayName
		}
	} else {
		// The table still works with raw service names.
		s.logger.Warn("listing services", "org", org, "error", svcsErr)
	}
	page := &credsPage{
		layout: l, Type: f.Type, Q: f.Q, Status: f.Status,
		Filtered: f.Type != "" || f.Q != "" || f.Status != "",
	}
	for _, c := range list {
		row := credRow{credSummary: c, ServiceName: names[c.Service]}
		if row.ServiceName == "" {
			row.ServiceName = c.Service
		}
		row.Fix = fixFor(org, c)
		if c.Status != "active" {
			page.Attention++
		}
		page.Rows = append(page.Rows, row)
	}
	if len(list) == pageSize {
		page.NextHref = listHref(org, f.Type, f.Q, f.Status, list[len(list)-1].Name)
	}
	sort.SliceStable(page.Rows, func(i, j int) bool {
		return statusOrder[page.Rows[i].Status] < statusOrder[page.Rows[j].Status]
	})
	page.Tabs = append(page.Tabs, filterTab{Label: "All", Href: listHref(org, "", f.Q, f.Status, ""), Current: f.Type == ""})
	for _, t := range credTypes {
		page.Tabs = append(page.Tabs, filterTab{Label: typeLabel(t), Href: listHref(org, t, f.Q, f.Status, ""), Current: f.Type == t})
	}
	page.ClearHref = listHref(org, "", "", "", "")
	page.Statuses = []string{"active", "needs_attention", "expired", "disconnected"}
	page.CanAdd = capsErr == nil && can(caps[probe], "create")
	page.CanRetryFailing = capsErr == nil && can(caps[retry], "update")
	s.render(w, r, http.StatusOK, "creds.html", page)
}

// listHref is the list page's URL for a filter.
func listHref(org, typ, q, status, after string) string {
	v := url.Values{}
	for k, val := range map[string]string{"type": typ, "q": q, "status": status, "after": after} {
		if val != "" {
			v.Set(k, val)
		}
	}
	u := "/orgs/" + org + "/creds"
	if len(v) > 0 {
		u += "?" + v.Encode()
	}
	return u
}

func credHref(org, name string) string { return "/orgs/" + org + "/creds/" + name }

// fixFor is the action that fixes a credential needing attention, or nil.
func fixFor(org string, c credSummary) *fixAction {
	if c.Status == "active" || c.Status == "" {
		return nil
	}
	base := credHref(org, c.Name)
	if c.Type == "oauth2" {
		label := "Reconnect"
		if c.StatusReason == "not connected yet" {
			label = "Connect"
		}
		return &fixAction{Label: label, Href: base + "/connect"}
	}
	if strings.Contains(c.StatusReason, "verify") {
		return &fixAction{Label: "Verify again", Post: base + "/verify"}
	}
	if c.Status == "disconnected" {
		return nil
	}
	return &fixAction{Label: "Replace " + secretNoun(c.Type), Href: base + "/edit"}
}

// secretNoun names a type's secret in buttons ("Replace key").
func secretNoun(typ string) string {
	switch typ {
	case "api_key":
		return "key"
	case "password":
		return "password"
	case "file":
		return "file"
	}
	return "secret"
}

// credDetail is a credential as its page shows it: metadata only, as the
// engine returns it (the engine never returns a secret).
type credDetail struct {
	Name, Type, Service, ServiceName, Description string
	Status, StatusReason                          string
	CreatedAt, UpdatedAt, LastUsedAt, LastUsedBy  string
	ExpiresAt                                     string
	KeyHint                                       string
	Username, Host, Port                          string
	// Security and AllowedSenders are an SMTP credential's.
	Security                                   string
	AllowedSenders                             []string
	Filename, FileSize, ClientEmail, ProjectID string
	App, Account, ConnectedAt, TokenExpiresAt  string
	NextRefreshAt, LastRefreshError            string
	Connected                                  bool
	Scopes                                     []string
	// Callers are the recent callers, the most recent first.
	Callers []callerUse
}

// callerUse is one caller's last use of a credential.
type callerUse struct{ Name, At string }

// callersFrom orders the engine's last_used_by_caller, most recent first.
func callersFrom(v any) []callerUse {
	m, _ := v.(map[string]any)
	out := make([]callerUse, 0, len(m))
	for name, at := range m {
		out = append(out, callerUse{Name: name, At: str(at)})
	}
	// RFC 3339 times in UTC sort as strings.
	sort.Slice(out, func(i, j int) bool {
		if out[i].At != out[j].At {
			return out[i].At > out[j].At
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// nameCallers shows an org's agents by the names people gave them
// (first-agent), not by their Vault entity names
// (orgs-acme-agent-first-agent).
func (c *credDetail) nameCallers(org string) {
	c.LastUsedBy = provision.AgentShortName(org, c.LastUsedBy)
	for i := range c.Callers {
		c.Callers[i].Name = provision.AgentShortName(org, c.Callers[i].Name)
	}
}

func credDetailFrom(d map[string]any) credDetail {
	num := func(v any) string {
		if v == nil {
			return ""
		}
		return fmt.Sprint(v)
	}
	return credDetail{
		Name: str(d["name"]), Type: str(d["type"]), Service: str(d["service"]),
		Description: str(d["description"]), Status: str(d["status"]), StatusReason: str(d["status_reason"]),
		CreatedAt: str(d["created_at"]), UpdatedAt: str(d["updated_at"]),
		LastUsedAt: str(d["last_used_at"]), LastUsedBy: str(d["last_used_by"]),
		ExpiresAt: str(d["expires_at"]), KeyHint: str(d["key_hint"]),
		Username: str(d["username"]), Host: str(d["host"]), Port: num(d["port"]),
		Security: str(d["security"]), AllowedSenders: strs(d["allowed_senders"]),
		Filename: str(d["filename"]), FileSize: num(d["file_size"]),
		ClientEmail: str(d["client_email"]), ProjectID: str(d["project_id"]),
		App: str(d["app"]), Account: str(d["account"]), Connected: d["connected"] == true,
		ConnectedAt: str(d["connected_at"]), TokenExpiresAt: str(d["token_expires_at"]),
		Scopes:        strs(d["scopes"]),
		NextRefreshAt: str(d["next_refresh_at"]), LastRefreshError: str(d["last_refresh_error"]),
		Callers: callersFrom(d["last_used_by_caller"]),
	}
}

type credPage struct {
	layout
	Cred credDetail
	Fix  *fixAction
	// What the person's token allows on this credential.
	CanConnect, CanDisconnect, CanRefresh, CanVerify, CanEdit, CanDelete bool
}

// handleCred is a credential's detail page with its actions.
func (s *Server) handleCred(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	ctx := r.Context()
	base := credPath(org, name)
	var (
		wg                        sync.WaitGroup
		l                         layout
		data                      map[string]any
		caps                      map[string][]string
		frameErr, readErr, capErr error
	)
	wg.Go(func() { l, frameErr = s.frameFor(ctx, p, org, name, "creds") })
	wg.Go(func() { data, readErr = p.v.read(ctx, base) })
	wg.Go(func() {
		caps, capErr = p.v.capabilities(ctx, base, base+"/connect", base+"/disconnect", base+"/refresh", base+"/verify")
	})
	wg.Wait()
	if err := cmp.Or(frameErr, readErr); err != nil {
		s.fail(w, r, p, err)
		return
	}
	if data == nil {
		s.renderError(w, r, http.StatusNotFound, fmt.Sprintf("There is no credential %q in %s.", name, org))
		return
	}
	page := &credPage{layout: l, Cred: credDetailFrom(data)}
	page.Cred.nameCallers(org)
	page.Cred.ServiceName = page.Cred.Service
	if svc, err := p.v.read(ctx, contract.Mount(org)+"/services/"+page.Cred.Service); err == nil && svc != nil {
		if dn := str(svc["display_name"]); dn != "" {
			page.Cred.ServiceName = dn
		}
	}
	page.Fix = fixFor(org, credSummary{Name: name, Type: page.Cred.Type, Status: page.Cred.Status, StatusReason: page.Cred.StatusReason})
	if capErr == nil {
		isOAuth := page.Cred.Type == "oauth2"
		page.CanConnect = isOAuth && can(caps[base+"/connect"], "update")
		page.CanDisconnect = isOAuth && page.Cred.Connected && can(caps[base+"/disconnect"], "update")
		page.CanRefresh = isOAuth && page.Cred.Connected && can(caps[base+"/refresh"], "update")
		page.CanVerify = can(caps[base+"/verify"], "update")
		page.CanEdit = can(caps[base], "update")
		page.CanDelete = can(caps[base], "delete")
	}
	s.render(w, r, http.StatusOK, "cred.html", page)
}
