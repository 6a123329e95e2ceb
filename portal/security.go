package portal

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// pageCSP is the Content-Security-Policy of every page: no script at all
// (the pages work without it), styles and images from the portal only,
// forms posting only to the portal, and no framing (clickjacking).
// Pages that post to the portal and are redirected on to an OAuth provider
// widen form-action with that provider's origin (withFormTarget), because
// browsers apply form-action to the redirects that follow a submission.
const pageCSP = "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// securePages sets the headers every page and API answer carries.
func securePages(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			// Pages show a person's data: never from a shared cache.
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// withFormTarget lets this response's forms lead to origin (an OAuth
// provider's authorization endpoint) as well as to the portal.
func withFormTarget(w http.ResponseWriter, rawURL string) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return
	}
	origin := u.Scheme + "://" + u.Host
	w.Header().Set("Content-Security-Policy",
		strings.Replace(pageCSP, "form-action 'self'", "form-action 'self' "+origin, 1))
}

// csrf refuses state-changing requests that a browser says came from
// another site (Sec-Fetch-Site, or Origin against Host), which is what a
// forged cross-site form post looks like. Requests without those headers
// are not from a browser (scripts with a Vault token), so they pass.
func (s *Server) csrf() (func(http.Handler) http.Handler, error) {
	cop := http.NewCrossOriginProtection()
	for _, o := range s.cfg.TrustedOrigins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("portal: trusted origin %q: %w", o, err)
		}
	}
	if s.publicURL != nil {
		// The public origin may differ from the Host a proxy forwards.
		if err := cop.AddTrustedOrigin(s.publicURL.Scheme + "://" + s.publicURL.Host); err != nil {
			return nil, fmt.Errorf("portal: public URL origin: %w", err)
		}
	}
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.logger.Warn("cross-origin request refused", "method", r.Method, "path", r.URL.Path)
		if wantsJSON(r) {
			writeJSON(w, http.StatusForbidden, apiError{Error: "cross-origin request refused"})
			return
		}
		s.renderError(w, r, http.StatusForbidden,
			"This form was sent from another site, so it was refused. Go back to the portal and try again there.")
	}))
	return cop.Handler, nil
}

// recoverPanics turns a handler panic into a 500 without the panic's value
// reaching the person (it could hold request data); the log gets the value.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.logger.Error("handler panic", "route", r.URL.Path, "panic", fmt.Sprint(v))
				http.Error(w, "Internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}
