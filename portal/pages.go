package portal

import (
	"bytes"
	"embed"
	"fmt"
	"hash/fnv"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
	"unicode"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// pages holds every page template, parsed once at start: each page is the
// layout plus its own file.
type pages struct {
	byName map[string]*template.Template
}

func parsePages(now func() time.Time) (*pages, error) {
	funcs := template.FuncMap{
		"ago":         func(ts string) string { return ago(ts, now()) },
		"rfc3339":     func(t time.Time) string { return t.Format(time.RFC3339) },
		"exact":       exactTime,
		"typeLabel":   typeLabel,
		"statusLabel": statusLabel,
		"logo":        logoPath,
		"monogram":    monogram,
		"monoClass":   monoClass,
		"join":        strings.Join,
		"duration":    shortDuration,
		"svc":         func(service, name string) logoRef { return logoRef{Service: service, Name: name} },
	}
	files, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, f := range files {
		name := path.Base(f)
		if name == "layout.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", f)
		if err != nil {
			return nil, fmt.Errorf("portal: parsing %s: %w", name, err)
		}
		p.byName[name] = t
	}
	return p, nil
}

// layout is what every page's frame shows; each page's data embeds it.
type layout struct {
	Title string
	// User is the signed-in person's name; empty on the sign-in page.
	User string
	// Org is the org the page is about; Orgs all the person can reach.
	Org  string
	Orgs []string
	// Nav names the current section: creds, apps or agents.
	Nav   string
	Flash *flash
}

func (l *layout) frame() *layout { return l }

type framed interface{ frame() *layout }

// render writes page name with data, rendered into a buffer first so that
// a template error becomes a clean 500 rather than half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, data framed) {
	t := s.pages.byName[name]
	if t == nil {
		s.logger.Error("no such page template", "name", name)
		http.Error(w, "Internal error", http.StatusInternalServerError)
		return
	}
	if l := data.frame(); l.Flash == nil {
		l.Flash = s.takeFlash(w, r)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		s.logger.Error("rendering page", "page", name, "error", err)
		http.Error(w, "Internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

type errorPage struct {
	layout
	Status  int
	Message string
}

// renderError shows a short message; details belong in the log.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	l := layout{Title: http.StatusText(status)}
	if sess := s.readSession(r); sess != nil {
		l.User = sess.User
	}
	s.render(w, r, status, "error.html", &errorPage{layout: l, Status: status, Message: msg})
}

// ago says how long ago (or how far ahead) ts is, as a person reads it at
// a glance; the exact time goes in a title beside it.
func ago(ts string, now time.Time) string {
	t, err := time.Parse(time.RFC3339, ts)
	if ts == "" || err != nil {
		return "never"
	}
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		if future {
			return "in less than a minute"
		}
		return "just now"
	case d < time.Hour:
		s = plural(int(d/time.Minute), "minute")
	case d < 48*time.Hour:
		s = plural(int(d/time.Hour), "hour")
	case d < 60*24*time.Hour:
		s = plural(int(d/(24*time.Hour)), "day")
	case d < 2*365*24*time.Hour:
		s = plural(int(d/(30*24*time.Hour)), "month")
	default:
		s = plural(int(d/(365*24*time.Hour)), "year")
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// shortDuration writes 15m0s as 15m and 1h0m0s as 1h.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func exactTime(ts string) string {
	t, err := time.Parse(time.RFC3339, ts)
	if err != nil {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

var typeLabels = map[string]string{
	"oauth2":   "OAuth",
	"api_key":  "API Key",
	"password": "Password",
	"file":     "File",
}

// credTypes in the order the filter shows them.
var credTypes = []string{"oauth2", "api_key", "password", "file"}

func typeLabel(t string) string {
	if l, ok := typeLabels[t]; ok {
		return l
	}
	return t
}

var statusLabels = map[string]string{
	"active":          "Active",
	"needs_attention": "Needs attention",
	"expired":         "Expired",
	"disconnected":    "Disconnected",
}

func statusLabel(s string) string {
	if l, ok := statusLabels[s]; ok {
		return l
	}
	return s
}

// logoRef is what the "logo" template needs: the service, and the name a
// monogram is drawn from when there is no logo.
type logoRef struct{ Service, Name string }

// logoAliases maps catalog services to a simple-icons slug when the names
// differ.
var logoAliases = map[string]string{
	"gcp-service-account": "googlecloud",
	"github-app":          "github",
}

// logos are the slugs extracted into static/logos (scripts/extract-logos.sh).
var logos = func() map[string]bool {
	m := map[string]bool{}
	entries, _ := fs.ReadDir(staticFS, "static/logos")
	for _, e := range entries {
		if slug, ok := strings.CutSuffix(e.Name(), ".svg"); ok {
			m[slug] = true
		}
	}
	return m
}()

// logoPath is the logo image of a service, or "" when it has none and a
// monogram stands in.
func logoPath(service string) string {
	slug := service
	if a, ok := logoAliases[service]; ok {
		slug = a
	}
	if logos[slug] {
		return "/static/logos/" + slug + ".svg"
	}
	return ""
}

// monogram is the one or two letters shown for a service without a logo.
func monogram(name string) string {
	words := strings.FieldsFunc(name, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
	var out []rune
	for _, w := range words {
		out = append(out, unicode.ToUpper([]rune(w)[0]))
		if len(out) == 2 {
			break
		}
	}
	if len(out) == 0 {
		return "?"
	}
	return string(out)
}

// monoClass picks a monogram colour from the name, stable across pages.
func monoClass(name string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return fmt.Sprintf("mono-%d", h.Sum32()%6)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// localPath accepts only a path on this site as a place to go back to, so
// a crafted link cannot send a person elsewhere after signing in.
func localPath(p string) string {
	if p == "" || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\\r\n") {
		return "/"
	}
	if u, err := url.Parse(p); err != nil || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return p
}
