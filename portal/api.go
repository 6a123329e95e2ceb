package portal

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"github.com/clankteam/credentials/internal/contract"
)

// maxAPIBody bounds a JSON request body (a 1 MiB file, base64-encoded).
const maxAPIBody = 2 << 20

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func wantsJSON(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/api/")
}

// apiAuth runs h with the caller's Vault token: from Authorization:
// Bearer or X-Vault-Token (scripts), else from the session cookie.
func (s *Server) apiAuth(h personHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := r.Header.Get("X-Vault-Token")
		if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			token = strings.TrimSpace(bearer)
		}
		sess := &session{Token: token}
		if token == "" {
			if sess = s.readSession(r); sess == nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="vault token"`)
				writeJSON(w, http.StatusUnauthorized, apiError{Error: "send a Vault token in Authorization: Bearer, or sign in"})
				return
			}
		}
		v, err := s.vaultFor(sess.Token)
		if err != nil {
			s.logger.Error("vault client", "error", err)
			writeJSON(w, http.StatusInternalServerError, apiError{Error: "internal error"})
			return
		}
		h(w, r, &person{sess: sess, v: v})
	})
}

// apiFail answers a failed API call with Vault's verdict.
func (s *Server) apiFail(w http.ResponseWriter, err error) {
	status, msg := vaultError(err)
	if status >= 500 {
		s.logger.Error("vault request failed", "error", err)
	}
	writeJSON(w, status, apiError{Error: msg})
}

// decodeJSON decodes a JSON body into v.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	return json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody)).Decode(v)
}

// readBody decodes a JSON object body.
func readBody(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	body := map[string]any{}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody))
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "the body must be a JSON object"})
		return nil, false
	}
	return body, true
}

func (s *Server) apiNotFound(w http.ResponseWriter, _ *http.Request, _ *person) {
	writeJSON(w, http.StatusNotFound, apiError{Error: "no such API route"})
}

func (s *Server) apiOrgs(w http.ResponseWriter, r *http.Request, p *person) {
	orgs, err := p.v.orgs(r.Context())
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"orgs": orgs})
}

func (s *Server) apiListCreds(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	q := r.URL.Query()
	f := credFilter{Type: q.Get("type"), Q: q.Get("q"), Status: q.Get("status"), After: q.Get("after")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "limit must be a positive number"})
			return
		}
		f.Limit = n
	}
	list, err := p.v.listCreds(r.Context(), org, f)
	if err != nil {
		s.apiFail(w, err)
		return
	}
	resp := map[string]any{"credentials": list}
	if f.Limit > 0 && len(list) == f.Limit {
		resp["next_after"] = list[len(list)-1].Name
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) apiCreateCred(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	defer clear(body)
	name, _ := body["name"].(string)
	if !contract.ValidCredName(name) {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "name must be 1-128 lowercase letters, digits, '-', '_' or '.'"})
		return
	}
	delete(body, "name")
	// The engine creates only what does not exist yet.
	if existing, err := p.v.read(r.Context(), credPath(org, name)); err != nil {
		s.apiFail(w, err)
		return
	} else if existing != nil {
		writeJSON(w, http.StatusConflict, apiError{Error: "credential " + name + " already exists"})
		return
	}
	data, err := p.v.write(r.Context(), credPath(org, name), body)
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, data)
}

func (s *Server) apiReadCred(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	data, err := p.v.read(r.Context(), credPath(org, mux.Vars(r)["name"]))
	if err != nil {
		s.apiFail(w, err)
		return
	}
	if data == nil {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such credential"})
		return
	}
	writeJSON(w, http.StatusOK, data)
}

func (s *Server) apiUpdateCred(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	defer clear(body)
	delete(body, "name")
	if existing, err := p.v.read(r.Context(), credPath(org, name)); err != nil {
		s.apiFail(w, err)
		return
	} else if existing == nil {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such credential"})
		return
	}
	data, err := p.v.write(r.Context(), credPath(org, name), body)
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, data)
}

func (s *Server) apiDeleteCred(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	data, err := p.v.delete(r.Context(), credPath(org, name))
	if err != nil {
		s.apiFail(w, err)
		return
	}
	resp := map[string]any{"deleted": name}
	if rv, ok := data["revocation"]; ok {
		resp["revocation"] = rv
	}
	writeJSON(w, http.StatusOK, resp)
}

// apiCredAction runs disconnect, refresh or verify. Connect needs a
// browser (the person approves at the provider, and the callback is bound
// to their portal session), so it answers with the page to open.
func (s *Server) apiCredAction(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name, action := mux.Vars(r)["name"], mux.Vars(r)["action"]
	if action == "connect" {
		writeJSON(w, http.StatusOK, map[string]any{
			"connect_url": s.publicBase(r) + credHref(org, name) + "/connect",
			"note":        "open connect_url in a browser signed in to the portal to approve access at the provider",
		})
		return
	}
	data, err := p.v.write(r.Context(), credPath(org, name)+"/"+action, nil)
	if err != nil {
		s.apiFail(w, err)
		return
	}
	if data == nil {
		data = map[string]any{}
	}
	writeJSON(w, http.StatusOK, data)
}

// publicBase is the portal's public base URL, from configuration or
// else from the request.
func (s *Server) publicBase(r *http.Request) string {
	return strings.TrimSuffix(s.callbackURL(r), "/oauth/callback")
}

func (s *Server) apiServices(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	svcs, err := p.v.services(r.Context(), org)
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"services": svcs})
}

func (s *Server) apiService(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	data, err := p.v.read(r.Context(), contract.Mount(org)+"/services/"+mux.Vars(r)["service"])
	if err != nil {
		s.apiFail(w, err)
		return
	}
	if data == nil {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such service"})
		return
	}
	writeJSON(w, http.StatusOK, data)
}

func (s *Server) apiApps(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	apps, err := p.v.apps(r.Context(), org)
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"apps": apps})
}

func (s *Server) apiReadApp(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	data, err := p.v.read(r.Context(), contract.Mount(org)+"/apps/"+mux.Vars(r)["name"])
	if err != nil {
		s.apiFail(w, err)
		return
	}
	if data == nil {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such app"})
		return
	}
	writeJSON(w, http.StatusOK, data)
}

func (s *Server) apiWriteApp(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	defer clear(body)
	delete(body, "name")
	data, err := p.v.write(r.Context(), contract.Mount(org)+"/apps/"+mux.Vars(r)["name"], body)
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, data)
}

func (s *Server) apiDeleteApp(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	if _, err := p.v.delete(r.Context(), contract.Mount(org)+"/apps/"+name); err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": name})
}
