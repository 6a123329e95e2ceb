package portal

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/portal/provision"
)

// person is a signed-in request: the session and a Vault client holding
// the person's own token.
type person struct {
	sess *session
	v    *vault
}

// personHandler is a handler for signed-in people; org is set for routes
// under /orgs/{org}/ and checked to be one the person can reach.
type personHandler func(w http.ResponseWriter, r *http.Request, p *person)

// signedIn sends people without a valid session to the sign-in page (or
// answers 401 to API callers) and runs h for everyone else.
func (s *Server) signedIn(h personHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess := s.readSession(r)
		if sess == nil {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			s.renderError(w, r, http.StatusUnauthorized, "Your session has ended. Sign in again.")
			return
		}
		v, err := s.vaultFor(sess.Token)
		if err != nil {
			s.logger.Error("vault client", "error", err)
			s.renderError(w, r, http.StatusInternalServerError, "Internal error.")
			return
		}
		h(w, r, &person{sess: sess, v: v})
	})
}

// orgOf returns the {org} of the route, checked to be a valid org name.
func orgOf(r *http.Request) (string, bool) {
	org := mux.Vars(r)["org"]
	return org, provision.ValidateOrgName(org) == nil
}

// frameFor builds the page frame for org: the person's name and the orgs
// they can reach (for the switcher). An org they cannot reach is a 404.
func (s *Server) frameFor(ctx context.Context, p *person, org, title, nav string) (layout, error) {
	orgs, err := p.v.orgs(ctx)
	if err != nil {
		return layout{}, err
	}
	if org != "" && !contains(orgs, org) {
		return layout{}, errNoOrg
	}
	return layout{Title: title, User: p.sess.User, Org: org, Orgs: orgs, Nav: nav}, nil
}

var errNoOrg = errors.New("no such org, or not one this person can reach")

// fail answers a failed page request. A 403 from Vault may mean the token
// itself is gone (revoked, expired): then the person is asked to sign in
// again rather than told they lack permission.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, p *person, err error) {
	if errors.Is(err, errNoOrg) {
		s.renderError(w, r, http.StatusNotFound, "There is no such org, or you are not a member of it.")
		return
	}
	status, msg := vaultError(err)
	if status == http.StatusForbidden && p != nil && !s.tokenAlive(r.Context(), p) {
		s.clearSession(w, r)
		s.setFlash(w, r, "error", "Your session has ended. Sign in again.")
		http.Redirect(w, r, "/signin", http.StatusSeeOther)
		return
	}
	if status >= 500 {
		s.logger.Error("vault request failed", "error", err)
	} else {
		s.logger.Info("vault refused request", "status", status, "error", err)
	}
	s.renderError(w, r, status, msg)
}

func (s *Server) tokenAlive(ctx context.Context, p *person) bool {
	_, err := p.v.c.Auth().Token().LookupSelfWithContext(ctx)
	return err == nil
}

type signInPage struct {
	layout
	Next     string
	Username string
	Error    string
}

func (s *Server) handleSignInForm(w http.ResponseWriter, r *http.Request) {
	if s.readSession(r) != nil {
		http.Redirect(w, r, localPath(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "signin.html", &signInPage{
		layout: layout{Title: "Sign in"},
		Next:   localPath(r.URL.Query().Get("next")),
	})
}

// usernamePattern keeps a user name usable as one Vault path segment.
var usernamePattern = regexp.MustCompile(`^[A-Za-z0-9_.@+-]{1,128}$`)

// handleSignIn signs a person in with Vault userpass or with a Vault token,
// and seals the resulting token into the session cookie. Attempts are rate
// limited per client address and per user name.
func (s *Server) handleSignIn(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.renderError(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	method := r.PostForm.Get("method")
	username := strings.TrimSpace(r.PostForm.Get("username"))
	page := &signInPage{layout: layout{Title: "Sign in"}, Next: localPath(r.PostForm.Get("next")), Username: username}
	refuse := func(status int, result, msg string) {
		s.metrics.signIns.WithLabelValues(method, result).Inc()
		page.Error = msg
		s.render(w, r, status, "signin.html", page)
	}
	if method != "userpass" && method != "token" {
		method = "unknown"
		refuse(http.StatusBadRequest, "error", "Choose how to sign in.")
		return
	}
	addr := clientIP(r, s.cfg.TrustedProxies)
	failKey := "fail:" + strings.ToLower(username) + "|" + addr
	if s.signInLimited(w, method, username, addr, failKey, refuse) {
		return
	}

	var (
		sess *session
		err  error
	)
	switch method {
	case "userpass":
		if !usernamePattern.MatchString(username) {
			refuse(http.StatusUnauthorized, "denied", "Wrong user name or password.")
			return
		}
		sess, err = s.loginUserpass(r.Context(), username, r.PostForm.Get("password"))
	case "token":
		sess, err = s.loginToken(r.Context(), strings.TrimSpace(r.PostForm.Get("token")))
	}
	if errors.Is(err, errLockedOut) {
		refuse(http.StatusForbidden, "locked", fmt.Sprintf(
			"This account is locked after too many wrong passwords from several places. It unlocks by itself within %s; an operator can unlock it now.",
			provision.UserLockoutDuration))
		return
	}
	if err != nil {
		if method == "userpass" && errors.Is(err, errBadCredentials) {
			s.signInFailures.spend(s.now(), failKey)
		}
		status, _ := vaultError(err)
		if status >= 500 && !errors.Is(err, errBadCredentials) {
			s.logger.Error("sign-in failed", "method", method, "error", err)
			refuse(http.StatusBadGateway, "error", "Vault could not be reached. Try again shortly.")
			return
		}
		if method == "token" {
			refuse(http.StatusUnauthorized, "denied", "That token is not valid.")
		} else {
			refuse(http.StatusUnauthorized, "denied", "Wrong user name or password.")
		}
		return
	}
	if err := s.writeSession(w, r, sess); err != nil {
		s.logger.Error("writing session", "error", err)
		refuse(http.StatusInternalServerError, "error", "Internal error.")
		return
	}
	s.metrics.signIns.WithLabelValues(method, "ok").Inc()
	s.logger.Info("signed in", "method", method, "user", sess.User)
	http.Redirect(w, r, page.Next, http.StatusSeeOther)
}

// signInLimited refuses a sign-in beyond the limits: attempts per client
// address, and wrong passwords per user name and address.
func (s *Server) signInLimited(w http.ResponseWriter, method, username, addr, failKey string, refuse func(status int, result, msg string)) bool {
	if ok, wait := s.signIns.allow(s.now(), "ip:"+addr); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		refuse(http.StatusTooManyRequests, "limited", "Too many sign-in attempts from your address. Wait a minute and try again.")
		return true
	}
	if method == "userpass" {
		if ok, wait := s.signInFailures.ready(s.now(), failKey); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
			refuse(http.StatusTooManyRequests, "limited", fmt.Sprintf(
				"Too many wrong passwords for %s from your address: wait %s and try again. Other addresses are not affected.",
				username, wait.Round(time.Minute)+time.Minute))
			return true
		}
	}
	return false
}

var (
	errBadCredentials = errors.New("wrong credentials")
	errLockedOut      = errors.New("locked out")
)

func (s *Server) loginUserpass(ctx context.Context, username, password string) (*session, error) {
	if password == "" {
		return nil, errBadCredentials
	}
	v, err := s.vaultFor("")
	if err != nil {
		return nil, err
	}
	sec, err := v.c.Logical().WriteWithContext(ctx, "auth/userpass/login/"+username, map[string]any{"password": password})
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
			// A login path needs no token: Vault denies it only while the
			// user is locked out (a wrong password is a 400).
			return nil, errLockedOut
		}
		if errors.As(err, &re) && re.StatusCode < 500 {
			return nil, errBadCredentials
		}
		return nil, fmt.Errorf("userpass login: %w", err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return nil, errBadCredentials
	}
	return s.newSession(sec.Auth.ClientToken, username, time.Duration(sec.Auth.LeaseDuration)*time.Second), nil
}

func (s *Server) loginToken(ctx context.Context, token string) (*session, error) {
	if token == "" || len(token) > 1024 || strings.ContainsAny(token, " \t\r\n") {
		return nil, errBadCredentials
	}
	v, err := s.vaultFor(token)
	if err != nil {
		return nil, err
	}
	sec, err := v.c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode < 500 {
			return nil, errBadCredentials
		}
		return nil, fmt.Errorf("token lookup: %w", err)
	}
	if sec == nil {
		return nil, errBadCredentials
	}
	name, _ := sec.Data["display_name"].(string)
	if name == "" {
		name = "token"
	}
	ttl, _ := sec.TokenTTL()
	return s.newSession(token, name, ttl), nil
}

// newSession lasts as long as the token, at most maxSessionLife.
func (s *Server) newSession(token, user string, ttl time.Duration) *session {
	if ttl <= 0 || ttl > maxSessionLife {
		ttl = maxSessionLife
	}
	return &session{Token: token, User: user, Expires: s.now().Add(ttl).Unix()}
}

// handleSignOut revokes the person's token, so the sealed cookie is
// worthless even if a copy of it survives, and clears the cookie.
func (s *Server) handleSignOut(w http.ResponseWriter, r *http.Request) {
	if sess := s.readSession(r); sess != nil {
		if v, err := s.vaultFor(sess.Token); err == nil {
			if err := v.c.Auth().Token().RevokeSelfWithContext(r.Context(), ""); err != nil {
				// An expired token cannot be revoked and need not be.
				s.logger.Info("revoking token at sign-out", "error", err)
			}
		}
	}
	s.clearSession(w, r)
	s.setFlash(w, r, "ok", "You are signed out.")
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

type noOrgsPage struct{ layout }

// handleHome sends a person to their first org's credentials.
func (s *Server) handleHome(w http.ResponseWriter, r *http.Request, p *person) {
	l, err := s.frameFor(r.Context(), p, "", "Credentials", "creds")
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	if len(l.Orgs) == 0 {
		s.render(w, r, http.StatusOK, "noorgs.html", &noOrgsPage{layout: l})
		return
	}
	http.Redirect(w, r, "/orgs/"+l.Orgs[0]+"/creds", http.StatusSeeOther)
}

// handleSwitchOrg is the org switcher's target (a plain GET form).
func (s *Server) handleSwitchOrg(w http.ResponseWriter, r *http.Request, p *person) {
	org := r.URL.Query().Get("org")
	if provision.ValidateOrgName(org) != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/orgs/"+org+"/creds", http.StatusSeeOther)
}
