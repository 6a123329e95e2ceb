package portal

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/clankteam/credentials/internal/contract"
)

// pendingLife bounds how long a started connect waits for its callback
// when the engine gives no expiry of its own.
const pendingLife = 15 * time.Minute

type connectPage struct {
	layout
	Cred         credDetail
	ProviderHost string
	// Replace: the credential works now, so connecting replaces its grant.
	Replace bool
}

// authOrigin is the OAuth authorization endpoint of a credential's
// service, so that the page that starts a connect may lead there.
func (s *Server) authURL(ctx context.Context, p *person, org, service string) string {
	svc, err := p.v.read(ctx, contract.Mount(org)+"/services/"+service)
	if err != nil || svc == nil {
		return ""
	}
	oauth, _ := svc["oauth"].(map[string]any)
	return str(oauth["auth_url"])
}

// handleConnectForm says where the person is about to be sent, with one
// button to go there.
func (s *Server) handleConnectForm(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	name := mux.Vars(r)["name"]
	ctx := r.Context()
	l, err := s.frameFor(ctx, p, org, "Connect "+name, "creds")
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	data, err := p.v.read(ctx, credPath(org, name))
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	if data == nil {
		s.renderError(w, r, http.StatusNotFound, fmt.Sprintf("There is no credential %q in %s.", name, org))
		return
	}
	c := credDetailFrom(data)
	if c.Type != "oauth2" {
		s.renderError(w, r, http.StatusBadRequest, "Only OAuth credentials are connected; this one is "+typeLabel(c.Type)+".")
		return
	}
	page := &connectPage{layout: l, Cred: c, Replace: c.Connected && c.Status == "active"}
	if au := s.authURL(ctx, p, org, c.Service); au != "" {
		withFormTarget(w, au)
		if u, err := url.Parse(au); err == nil {
			page.ProviderHost = u.Host
		}
	}
	s.render(w, r, http.StatusOK, "connect.html", page)
}

func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	s.startConnect(w, r, p, org, mux.Vars(r)["name"])
}

// startConnect asks the engine to start an OAuth connect, binds it to this
// session (the callback is refused from any other) and sends the browser
// to the provider.
func (s *Server) startConnect(w http.ResponseWriter, r *http.Request, p *person, org, name string) {
	ctx := r.Context()
	if err := s.ensureRedirectURL(ctx, p, org, r); err != nil {
		s.fail(w, r, p, err)
		return
	}
	var fields map[string]any
	replace := r.PostFormValue("replace") == "true"
	if replace {
		fields = map[string]any{"replace": true}
	}
	data, err := p.v.write(ctx, credPath(org, name)+"/connect", fields)
	if err != nil {
		if status, _ := vaultError(err); replace && status == http.StatusForbidden {
			s.renderError(w, r, http.StatusForbidden, "This credential works now: replacing its connection (and revoking the current grant) takes the org's admin policy. Ask an admin, or wait until it needs attention.")
			return
		}
		s.fail(w, r, p, err)
		return
	}
	authURL, state := str(data["auth_url"]), str(data["state"])
	u, perr := url.Parse(authURL)
	if state == "" || perr != nil || (u.Scheme != "https" && u.Scheme != "http") {
		s.logger.Error("connect answer without auth_url or state", "org", org, "credential", name)
		s.renderError(w, r, http.StatusBadGateway, "The connection could not be started. Try again.")
		return
	}
	expires := s.now().Add(pendingLife)
	if t, err := time.Parse(time.RFC3339, str(data["expires_at"])); err == nil {
		expires = t
	}
	p.sess.Pending = append(p.sess.Pending, pendingConnect{Org: org, Cred: name, State: state, Expires: expires.Unix()})
	if err := s.writeSession(w, r, p.sess); err != nil {
		s.logger.Error("writing session", "error", err)
		s.renderError(w, r, http.StatusInternalServerError, "Internal error.")
		return
	}
	http.Redirect(w, r, authURL, http.StatusSeeOther)
}

// ensureRedirectURL makes sure the org's engine sends providers back to
// this portal's callback: it sets config redirect_url when none is set
// (which needs an admin's token). A URL already set is left alone: it may
// name the public address of a load balancer in front of this instance.
func (s *Server) ensureRedirectURL(ctx context.Context, p *person, org string, r *http.Request) error {
	cfg, err := p.v.read(ctx, contract.Mount(org)+"/config")
	if err != nil {
		return err
	}
	if str(cfg["redirect_url"]) != "" {
		return nil
	}
	_, err = p.v.write(ctx, contract.Mount(org)+"/config", map[string]any{"redirect_url": s.callbackURL(r)})
	return err
}

// callbackURL is the OAuth redirect URI of this portal.
func (s *Server) callbackURL(r *http.Request) string {
	if s.publicURL != nil {
		return s.CallbackURL()
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/oauth/callback"
}

// handleOAuthCallback finishes a connect. It acts only on a callback whose
// state this very session started: a callback from another session (a
// forged link, or a code meant for someone else) is refused without
// reaching Vault.
func (s *Server) handleOAuthCallback(w http.ResponseWriter, r *http.Request) {
	// The URL holds an authorization code: no page linked from here may see it.
	w.Header().Set("Referrer-Policy", "no-referrer")
	q := r.URL.Query()
	state := q.Get("state")
	sess := s.readSession(r)
	var pc pendingConnect
	why := stateUnknown
	if sess != nil && state != "" {
		pc, why = sess.takePendingWhy(state, s.now())
	}
	if why != "" {
		s.metrics.connects.WithLabelValues("refused").Inc()
		s.logger.Warn("oauth callback refused", "signed_in", sess != nil, "reason", why)
		if sess != nil && why != stateUnknown {
			// The state is used up (or known used): remember that.
			if err := s.writeSession(w, r, sess); err != nil {
				s.logger.Error("writing session", "error", err)
			}
		}
		s.renderError(w, r, http.StatusBadRequest, callbackRefusal(sess != nil, state != "", why))
		return
	}
	// The pending connect is used up whatever happens next.
	if err := s.writeSession(w, r, sess); err != nil {
		s.logger.Error("writing session", "error", err)
	}
	back := credHref(pc.Org, pc.Cred)
	if e := q.Get("error"); e != "" {
		s.metrics.connects.WithLabelValues("provider_error").Inc()
		msg := "The provider did not grant access (" + e + ")."
		if e == "access_denied" {
			msg = "Access was denied at the provider, so nothing was connected."
		}
		s.setFlash(w, r, "error", msg)
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	v, err := s.vaultFor(sess.Token)
	if err != nil {
		s.logger.Error("vault client", "error", err)
		s.renderError(w, r, http.StatusInternalServerError, "Internal error.")
		return
	}
	fields := map[string]any{"code": q.Get("code"), "state": state}
	if iss := q.Get("iss"); iss != "" {
		fields["iss"] = iss
	}
	data, err := v.write(r.Context(), credPath(pc.Org, pc.Cred)+"/callback", fields)
	if err != nil {
		s.metrics.connects.WithLabelValues("failed").Inc()
		status, msg := vaultError(err)
		s.logger.Warn("oauth callback failed", "org", pc.Org, "credential", pc.Cred, "status", status)
		s.setFlash(w, r, "error", "Connecting "+pc.Cred+" failed: "+msg)
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	s.metrics.connects.WithLabelValues("ok").Inc()
	msg := "Connected " + pc.Cred + "."
	if acct := str(data["account"]); acct != "" {
		msg = "Connected " + pc.Cred + " as " + acct + "."
	}
	if replaced, ok := data["replaced_grant"].(map[string]any); ok {
		if receipt := receiptText(replaced); receipt != "" {
			msg += " The grant it replaced: " + receipt
		}
	}
	s.setFlash(w, r, "ok", msg)
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// receiptText says in a sentence what a disconnect or delete revoked at
// the provider and what it could not.
func receiptText(d map[string]any) string {
	if d == nil {
		return ""
	}
	if inner, ok := d["revocation"].(map[string]any); ok {
		d = inner
	}
	var parts []string
	if rv := strs(d["revoked"]); len(rv) > 0 {
		parts = append(parts, "Revoked at the provider: "+strings.Join(rv, ", ")+".")
	}
	if nr := strs(d["not_revoked"]); len(nr) > 0 {
		s := "Not revoked: " + strings.Join(nr, ", ")
		if reason := str(d["reason"]); reason != "" {
			s += " (" + reason + ")"
		}
		parts = append(parts, s+".")
	}
	return strings.Join(parts, " ")
}

// callbackRefusal says exactly why a callback was refused, as the engine
// says it to the CLI.
func callbackRefusal(signedIn, hasState bool, why string) string {
	switch {
	case !signedIn:
		return "You are not signed in to the portal in this browser, so this answer from the provider cannot be matched to a connect you started. Sign in, open the credential and connect again."
	case !hasState:
		return "The provider's answer carries no state, so it cannot be matched to a connect you started. Open the credential and connect again."
	case why == stateUsed:
		return "This state was already used: the connect it belongs to is finished. Open the credential to see it, or connect again."
	case why == stateExpired:
		return "This connect took longer than it may (10 minutes), so its state has expired. Open the credential and connect again."
	}
	return "This state does not match a connect started in this session: it was started in another browser or session, or by someone else. Open the credential and connect again."
}
