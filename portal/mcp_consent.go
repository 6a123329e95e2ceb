package portal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"slices"
	"strings"

	"github.com/ory/fosite"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal/provision"
)

// The consent step: /oauth/authorize shows the person (signed in with
// their own Vault token) which client asks, where the code goes, and lets
// them pick the agent it acts as, an existing one or a new one with the
// credentials they choose, then approve or deny. The form posts back to
// the same URL, so fosite checks the whole request again before a code is
// made.

type consentPage struct {
	layout
	ClientName   string
	ClientID     string
	RedirectHost string
	Orgs         []string
	OrgFixed     bool
	Agents       []provision.Agent
	Creds        []credSummary
	Error        string
	Action       string
}

func (a *mcpAuth) handleAuthorize(w http.ResponseWriter, r *http.Request, p *person) {
	ctx := context.WithValue(r.Context(), fosite.RequestContextKey, r)
	ar, err := a.provider.NewAuthorizeRequest(ctx, r)
	if err != nil {
		a.writeAuthorizeError(w, r, ar, err)
		return
	}
	org, err := a.checkAuthorize(r, ar)
	if err != nil {
		a.writeAuthorizeError(w, r, ar, err)
		return
	}
	client, err := a.clients.lookup(ctx, ar.GetClient().GetID())
	if err != nil {
		a.writeAuthorizeError(w, r, ar, fosite.ErrInvalidClient.WithHint(err.Error()))
		return
	}
	if r.Method == http.MethodGet {
		a.renderConsent(w, r, p, client, ar, org, "", http.StatusOK)
		return
	}
	if r.PostForm.Get("decision") != "approve" {
		a.writeAuthorizeError(w, r, ar, fosite.ErrAccessDenied.WithHint("The person denied the request."))
		return
	}
	if org == "" {
		org = r.PostForm.Get("org")
	}
	code, msg, err := a.approve(ctx, r, p, client, ar, org)
	if err != nil {
		a.s.fail(w, r, p, err)
		return
	}
	if msg != "" {
		a.renderConsent(w, r, p, client, ar, org, msg, http.StatusBadRequest)
		return
	}
	resp, err := a.provider.NewAuthorizeResponse(ctx, ar, &mcpSession{code: code})
	if err != nil {
		a.writeAuthorizeError(w, r, ar, err)
		return
	}
	resp.AddParameter("iss", a.issuer(r))
	a.provider.WriteAuthorizeResponse(ctx, w, ar, resp)
}

func (a *mcpAuth) renderConsent(w http.ResponseWriter, r *http.Request, p *person, c *mcpClient, ar fosite.AuthorizeRequester, org, msg string, status int) {
	ctx := r.Context()
	l, err := a.s.frameFor(ctx, p, "", "Connect "+c.Name, "")
	if err != nil {
		a.s.fail(w, r, p, err)
		return
	}
	page := &consentPage{layout: l, ClientName: c.Name, ClientID: c.ID, RedirectHost: clientHost(ar.GetRedirectURI().String()),
		Orgs: l.Orgs, OrgFixed: org != "", Error: msg, Action: r.URL.RequestURI()}
	if org != "" {
		if !slices.Contains(l.Orgs, org) {
			a.writeAuthorizeError(w, r, ar, fosite.ErrAccessDenied.WithHint("The signed-in person is not a member of org "+org+"."))
			return
		}
		page.Org, page.Orgs = org, []string{org}
	} else if len(l.Orgs) > 0 {
		page.Org = l.Orgs[0]
	}
	if page.Org != "" {
		page.Creds, _ = a.usableCreds(ctx, p, page.Org)
		page.Agents, _ = provision.ListAgents(ctx, p.v.c, page.Org)
	}
	// The approval's answer is a redirect to the client: the form may
	// lead there.
	withFormTarget(w, ar.GetRedirectURI().String())
	a.s.render(w, r, status, "consent.html", page)
}

// usableCreds are the org's credentials the person may give an agent:
// org admins any of the org's, members those they may use themselves.
func (a *mcpAuth) usableCreds(ctx context.Context, p *person, org string) ([]credSummary, error) {
	all, err := p.v.listCreds(ctx, org, credFilter{})
	if err != nil || len(all) == 0 {
		return all, err
	}
	paths := make([]string, 0, len(all))
	for _, c := range all {
		paths = append(paths, contract.UsePath(org, contract.UseProxy, c.Name))
	}
	caps, err := p.v.capabilities(ctx, paths...)
	if err != nil {
		return nil, err
	}
	var out []credSummary
	for i, c := range all {
		if can(caps[paths[i]], "update") {
			out = append(out, c)
		}
	}
	return out, nil
}

// approve makes the grant: the agent (created when new), a secret ID of
// its own for this client, and the grant with its code in the engine, all
// with the person's token. msg says what the person must change.
func (a *mcpAuth) approve(ctx context.Context, r *http.Request, p *person, c *mcpClient, ar fosite.AuthorizeRequester, org string) (code, msg string, err error) {
	if !contract.ValidOrgName(org) {
		return "", "Choose the org the client may use.", nil
	}
	f := r.PostForm
	agent := strings.TrimSpace(f.Get("agent"))
	if agent == "" || agent == "new" {
		spec := provision.AgentSpec{Name: strings.TrimSpace(f.Get("new_agent")), Creds: f["credential"], TokenTTL: provision.DefaultAgentTokenTTL}
		if !agentNamePattern.MatchString(spec.Name) {
			return "", "The new agent's name must be 1-48 lowercase letters, digits or '-', starting with a letter or digit.", nil
		}
		if len(spec.Creds) == 0 {
			return "", "Choose at least one credential the agent may use.", nil
		}
		usable, err := a.usableCreds(ctx, p, org)
		if err != nil {
			return "", "", err
		}
		for _, name := range spec.Creds {
			if !slices.ContainsFunc(usable, func(u credSummary) bool { return u.Name == name }) {
				return "", "You may give an agent only credentials you may use yourself: " + name + " is not one.", nil
			}
		}
		login, err := provision.CreateAgent(ctx, p.v.c, org, spec)
		if err != nil {
			if t := agentErrorText(err); t != "" {
				return "", t, nil
			}
			return "", "", err
		}
		// Its first secret ID is nobody's: this client gets its own.
		_ = provision.DestroySecretID(ctx, p.v.c, org, spec.Name, login.SecretIDAccessor)
		agent = spec.Name
	}
	var idb [16]byte
	_, _ = rand.Read(idb[:])
	grant := hex.EncodeToString(idb[:])
	resource := a.resourceOf(r, org)
	login, err := provision.NewMCPLogin(ctx, p.v.c, org, agent, grant, resource)
	if err != nil {
		if t := agentErrorText(err); t != "" {
			return "", t, nil
		}
		return "", "", err
	}
	secret := rand.Text()
	engineCode := grant + "." + secret
	form := ar.GetRequestForm()
	_, err = p.v.write(ctx, contract.Mount(org)+"/mcp/grants/"+grant, map[string]any{
		"agent": agent, "client_id": c.ID, "client_name": c.Name, "redirect_uri": form.Get("redirect_uri"),
		"resource": resource, "scope": strings.Join(ar.GetRequestedScopes(), " "),
		"role_id": login.RoleID, "secret_id": login.SecretID, "secret_id_accessor": login.SecretIDAccessor,
		"code_hash": codeHash(engineCode), "code_challenge": form.Get("code_challenge"),
		"code_ttl": int(mcpCodeTTL.Seconds()),
	})
	if err != nil {
		_ = provision.DestroySecretID(context.WithoutCancel(ctx), p.v.c, org, agent, login.SecretIDAccessor)
		return "", "", err
	}
	a.s.logger.Info("mcp client approved", "org", org, "agent", agent, "client", c.Name, "user", p.sess.User)
	return grantToken(org, engineCode), "", nil
}
