package portal

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/clankteam/credentials/internal/contract"
)

const (
	// maxFileSize is the engine's limit for a file credential.
	maxFileSize = 1 << 20
	// maxFormSize bounds a posted form, an uploaded file included.
	maxFormSize = maxFileSize + 64<<10
)

type servicesPage struct {
	layout
	Services []serviceInfo
}

// handleAddPick is the first step of adding a credential: pick a service.
func (s *Server) handleAddPick(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	ctx := r.Context()
	l, err := s.frameFor(ctx, p, org, "Add a credential", "creds")
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	svcs, err := p.v.services(ctx, org)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	s.render(w, r, http.StatusOK, "add.html", &servicesPage{layout: l, Services: svcs})
}

// serviceDetail is what a credential form needs to know of its service.
type serviceDetail struct {
	serviceInfo
	RequiresHost       bool
	ServiceAccountJSON bool
	AuthURL            string
}

func (v *vault) service(ctx context.Context, org, name string) (*serviceDetail, error) {
	d, err := v.read(ctx, contract.Mount(org)+"/services/"+name)
	if err != nil || d == nil {
		return nil, err
	}
	sd := &serviceDetail{
		serviceInfo:        serviceInfo{Name: name, DisplayName: str(d["display_name"]), Types: strs(d["types"]), Builtin: d["builtin"] == true},
		RequiresHost:       d["requires_host"] == true,
		ServiceAccountJSON: d["service_account_json"] == true,
	}
	if sd.DisplayName == "" {
		sd.DisplayName = name
	}
	if oauth, ok := d["oauth"].(map[string]any); ok {
		sd.AuthURL = str(oauth["auth_url"])
	}
	return sd, nil
}

// credForm is the add and edit form of one credential type. Values holds
// what the person typed, to show again after an error; secrets are never
// put back into a page.
type credForm struct {
	layout
	Service *serviceDetail
	Type    string
	// ChooseType is set when the service takes several types and none is
	// chosen yet.
	ChooseType bool
	Apps       []appInfo
	Values     map[string]string
	Error      string
	// Editing is set on a credential's edit form (secrets optional there).
	Editing bool
	Action  string
	Cancel  string
}

// handleAddForm shows the form the chosen service and type need.
func (s *Server) handleAddForm(w http.ResponseWriter, r *http.Request, p *person) {
	form, err := s.addForm(r, p)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	if form == nil {
		s.renderError(w, r, http.StatusNotFound, "There is no such service in the catalog.")
		return
	}
	form.Values = map[string]string{"name": form.Service.Name}
	if form.Type == "oauth2" && form.Service.AuthURL != "" {
		withFormTarget(w, form.Service.AuthURL)
	}
	s.render(w, r, http.StatusOK, "credform.html", form)
}

// addForm builds the add form for the route's service and ?type; nil when
// the service does not exist.
func (s *Server) addForm(r *http.Request, p *person) (*credForm, error) {
	org, _ := orgOf(r)
	ctx := r.Context()
	l, err := s.frameFor(ctx, p, org, "Add a credential", "creds")
	if err != nil {
		return nil, err
	}
	svc, err := p.v.service(ctx, org, mux.Vars(r)["service"])
	if err != nil || svc == nil {
		return nil, err
	}
	l.Title = "Add " + svc.DisplayName
	form := &credForm{layout: l, Service: svc, Action: r.URL.Path, Cancel: "/orgs/" + org + "/add"}
	typ := r.FormValue("type")
	switch {
	case contains(svc.Types, typ):
		form.Type = typ
	case len(svc.Types) == 1:
		form.Type = svc.Types[0]
	default:
		form.ChooseType = true
	}
	if form.Type == "oauth2" {
		apps, err := p.v.apps(ctx, org)
		if err != nil {
			return nil, err
		}
		for _, a := range apps {
			if a.Service == svc.Name {
				form.Apps = append(form.Apps, a)
			}
		}
	}
	return form, nil
}

// handleAdd creates the credential; an OAuth one is connected right away.
func (s *Server) handleAdd(w http.ResponseWriter, r *http.Request, p *person) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormSize)
	if err := parseForm(r); err != nil {
		s.renderError(w, r, http.StatusBadRequest, formErrorText(err))
		return
	}
	form, err := s.addForm(r, p)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	if form == nil || form.ChooseType {
		s.renderError(w, r, http.StatusBadRequest, "Choose a service and a credential type first.")
		return
	}
	org, _ := orgOf(r)
	name := strings.TrimSpace(r.PostForm.Get("name"))
	form.Values = formValues(r)
	data, msg := credFormData(r, form.Type, false)
	if msg == "" && !contract.ValidCredName(name) {
		msg = "The name must be 1-128 lowercase letters, digits, '-', '_' or '.'."
	}
	if msg == "" {
		data["type"], data["service"] = form.Type, form.Service.Name
		if _, err := p.v.write(r.Context(), credPath(org, name), data); err != nil {
			if status, vmsg := vaultError(err); status == http.StatusBadRequest {
				msg = vmsg
			} else {
				s.fail(w, r, p, err)
				return
			}
		}
	}
	clear(data)
	if msg != "" {
		form.Error = msg
		if form.Type == "oauth2" && form.Service.AuthURL != "" {
			withFormTarget(w, form.Service.AuthURL)
		}
		s.render(w, r, http.StatusBadRequest, "credform.html", form)
		return
	}
	s.logger.Info("credential added", "org", org, "credential", name, "type", form.Type)
	if form.Type == "oauth2" {
		s.startConnect(w, r, p, org, name)
		return
	}
	s.setFlash(w, r, "ok", "Added "+name+".")
	http.Redirect(w, r, credHref(org, name), http.StatusSeeOther)
}

// handleEditForm shows a credential's edit form: description, expiry and
// a new secret (left empty, the stored one is kept).
func (s *Server) handleEditForm(w http.ResponseWriter, r *http.Request, p *person) {
	form, status, err := s.editForm(r, p)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	if form == nil {
		s.renderError(w, r, status, "There is no such credential.")
		return
	}
	s.render(w, r, http.StatusOK, "credform.html", form)
}

func (s *Server) editForm(r *http.Request, p *person) (*credForm, int, error) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	ctx := r.Context()
	l, err := s.frameFor(ctx, p, org, "Change "+name, "creds")
	if err != nil {
		return nil, 0, err
	}
	d, err := p.v.read(ctx, credPath(org, name))
	if err != nil || d == nil {
		return nil, http.StatusNotFound, err
	}
	c := credDetailFrom(d)
	svc, err := p.v.service(ctx, org, c.Service)
	if err != nil {
		return nil, 0, err
	}
	if svc == nil {
		svc = &serviceDetail{serviceInfo: serviceInfo{Name: c.Service, DisplayName: c.Service}}
	}
	form := &credForm{
		layout: l, Service: svc, Type: c.Type, Editing: true,
		Action: credHref(org, name) + "/edit", Cancel: credHref(org, name),
		Values: map[string]string{
			"name": name, "description": c.Description, "username": c.Username,
			"host": c.Host, "port": c.Port, "app": c.App, "expires": dateOnly(c.ExpiresAt),
			"security": c.Security, "allowed_senders": strings.Join(c.AllowedSenders, ", "),
		},
	}
	if c.Type == "oauth2" {
		apps, err := p.v.apps(ctx, org)
		if err != nil {
			return nil, 0, err
		}
		for _, a := range apps {
			if a.Service == svc.Name {
				form.Apps = append(form.Apps, a)
			}
		}
	}
	return form, 0, nil
}

func (s *Server) handleEdit(w http.ResponseWriter, r *http.Request, p *person) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormSize)
	if err := parseForm(r); err != nil {
		s.renderError(w, r, http.StatusBadRequest, formErrorText(err))
		return
	}
	form, status, err := s.editForm(r, p)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	if form == nil {
		s.renderError(w, r, status, "There is no such credential.")
		return
	}
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	form.Values = formValues(r)
	form.Values["name"] = name
	data, msg := credFormData(r, form.Type, true)
	if msg == "" {
		if _, err := p.v.write(r.Context(), credPath(org, name), data); err != nil {
			if status, vmsg := vaultError(err); status == http.StatusBadRequest {
				msg = vmsg
			} else {
				s.fail(w, r, p, err)
				return
			}
		}
	}
	clear(data)
	if msg != "" {
		form.Error = msg
		s.render(w, r, http.StatusBadRequest, "credform.html", form)
		return
	}
	s.setFlash(w, r, "ok", "Saved "+name+".")
	http.Redirect(w, r, credHref(org, name), http.StatusSeeOther)
}

// parseForm reads a url-encoded or multipart form (file uploads).
func parseForm(r *http.Request) error {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		return r.ParseMultipartForm(maxFormSize)
	}
	return r.ParseForm()
}

func formErrorText(err error) string {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return "The form is too large: a file may be at most 1 MiB."
	}
	return "The form could not be read."
}

// formValues are the non-secret fields of a posted credential form.
func formValues(r *http.Request) map[string]string {
	v := map[string]string{}
	for _, k := range []string{"name", "description", "username", "host", "port", "app", "expires", "security", "allowed_senders"} {
		v[k] = strings.TrimSpace(r.PostForm.Get(k))
	}
	return v
}

// credFormData turns a posted form into the engine's fields for type typ.
// Editing, an empty secret field keeps the stored secret. It returns a
// message for the person when the form is wrong.
func credFormData(r *http.Request, typ string, editing bool) (map[string]any, string) {
	f := r.PostForm
	data := map[string]any{"description": strings.TrimSpace(f.Get("description"))}
	switch exp := strings.TrimSpace(f.Get("expires")); {
	case exp == "":
		data["expires_at"] = ""
	default:
		t, err := time.Parse("2006-01-02", exp)
		if err != nil {
			return data, "The expiry date must be a date such as 2027-01-31."
		}
		data["expires_at"] = t.UTC().Format(time.RFC3339)
	}
	switch typ {
	case "api_key":
		if k := strings.TrimSpace(f.Get("api_key")); k != "" {
			data["api_key"] = k
		} else if !editing {
			return data, "Paste the API key."
		}
	case "password":
		data["username"] = strings.TrimSpace(f.Get("username"))
		if pw := f.Get("password"); pw != "" {
			data["password"] = pw
		} else if !editing {
			return data, "Enter the password."
		}
		if h := strings.TrimSpace(f.Get("host")); h != "" {
			data["host"] = h
		}
		if port := strings.TrimSpace(f.Get("port")); port != "" {
			var n int
			if _, err := fmt.Sscanf(port, "%d", &n); err != nil || fmt.Sprint(n) != port {
				return data, "The port must be a number."
			}
			data["port"] = n
		}
		// Only the SMTP form has these.
		if sec := f.Get("security"); sec != "" {
			data["security"] = sec
		}
		if _, ok := f["allowed_senders"]; ok {
			data["allowed_senders"] = strings.TrimSpace(f.Get("allowed_senders"))
		}
	case "file":
		content, filename, err := uploadedFile(r)
		switch {
		case err != nil:
			return data, err.Error()
		case content != nil:
			data["file"] = base64.StdEncoding.EncodeToString(content)
			data["filename"] = filename
			clear(content)
		case !editing:
			return data, "Choose the file to upload."
		}
	case "oauth2":
		if app := strings.TrimSpace(f.Get("app")); app != "" {
			data["app"] = app
		} else if !editing {
			return data, "Choose the OAuth app to connect through; register one on the Apps page first."
		}
	}
	return data, ""
}

// uploadedFile returns the form's file, nil when none was chosen.
func uploadedFile(r *http.Request) ([]byte, string, error) {
	if r.MultipartForm == nil {
		return nil, "", nil
	}
	fh := r.MultipartForm.File["file"]
	if len(fh) == 0 || fh[0].Size == 0 {
		return nil, "", nil
	}
	if fh[0].Size > maxFileSize {
		return nil, "", errors.New("the file is larger than 1 MiB")
	}
	f, err := fh[0].Open()
	if err != nil {
		return nil, "", errors.New("the uploaded file could not be read")
	}
	defer f.Close()
	content, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil || len(content) > maxFileSize {
		return nil, "", errors.New("the uploaded file could not be read")
	}
	name := filepath.Base(strings.ReplaceAll(fh[0].Filename, "\\", "/"))
	if name == "." || name == "/" {
		name = "upload"
	}
	return content, name, nil
}

func dateOnly(ts string) string {
	t, err := time.Parse(time.RFC3339, ts)
	if err != nil {
		return ""
	}
	return t.UTC().Format("2006-01-02")
}
