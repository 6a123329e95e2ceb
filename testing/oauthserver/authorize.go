package oauthserver

import (
	"html/template"
	"net/http"

	"github.com/ory/fosite"
)

// consentPage is a plain form so a real browser (or a test doing one POST)
// can approve or deny; it posts back to the same URL, whose query still
// holds the authorization request, so fosite re-validates it on POST.
var consentPage = template.Must(template.New("consent").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Authorize {{.ClientID}}</title></head>
<body>
<h1>Authorize {{.ClientID}}</h1>
<p>The application <b>{{.ClientID}}</b> asks for access to your account.</p>
{{if .Scopes}}<p>Requested scopes:</p>
<ul>{{range .Scopes}}<li><code>{{.}}</code></li>{{end}}</ul>{{end}}
<form method="post" action="{{.Action}}">
<label for="login">Sign in as</label>
<input type="text" id="login" name="login" value="{{.Login}}">
<button type="submit" id="allow" name="decision" value="allow">Allow</button>
<button type="submit" id="deny" name="decision" value="deny">Deny</button>
</form>
</body>
</html>
`))

type consentData struct {
	ClientID string
	Scopes   []string
	Action   string
	Login    string
}

// handleAuthorize serves the authorization endpoint. GET shows the consent
// page (or decides at once under auto-approve); POST carries the decision.
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method == http.MethodGet {
		s.mu.Lock()
		s.resources = append(s.resources, r.URL.Query().Get("resource"))
		s.mu.Unlock()
	}
	ar, err := s.provider.NewAuthorizeRequest(ctx, r)
	if err != nil {
		s.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}

	decision := ""
	if r.Method == http.MethodPost {
		decision = r.PostForm.Get("decision")
	} else {
		switch r.URL.Query().Get("auto") {
		case "approve", "allow", "1", "true":
			decision = "allow"
		case "deny":
			decision = "deny"
		default:
			s.mu.Lock()
			if s.autoApprove {
				decision = "allow"
			}
			s.mu.Unlock()
		}
	}

	switch decision {
	case "allow":
		for _, scope := range ar.GetRequestedScopes() {
			ar.GrantScope(scope)
		}
		login := r.Form.Get("login")
		resp, err := s.provider.NewAuthorizeResponse(ctx, ar, newSession(s.identityFor(login)))
		if err != nil {
			s.provider.WriteAuthorizeError(ctx, w, ar, err)
			return
		}
		if s.opts.IssInCallback {
			// RFC 9207: the redirect names the issuer, against mix-ups.
			resp.AddParameter("iss", s.Issuer())
		}
		s.provider.WriteAuthorizeResponse(ctx, w, ar, resp)
	case "deny":
		s.provider.WriteAuthorizeError(ctx, w, ar, fosite.ErrAccessDenied.WithHint("The resource owner denied the request."))
	default:
		if r.Method == http.MethodPost {
			http.Error(w, "decision must be allow or deny", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = consentPage.Execute(w, consentData{
			ClientID: ar.GetClient().GetID(),
			Scopes:   ar.GetRequestedScopes(),
			// Relative, so the page also works when Handler() is mounted elsewhere.
			Action: "?" + r.URL.RawQuery,
			Login:  s.opts.User.Login,
		})
	}
}
