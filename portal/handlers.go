package portal

import (
	"html/template"
	"net/http"
)

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

var homePage = template.Must(template.New("home").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Credentials</title></head>
<body><h1>Credentials</h1><p>Your organization's credentials for AI agents, kept in Vault at {{.}}.</p></body></html>
`))

func (s *Server) handleHome(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := homePage.Execute(w, s.cfg.VaultAddr); err != nil {
		s.logger.Error("rendering home", "error", err)
	}
}
