package portal

import (
	"io/fs"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/clankteam/credentials/internal/contract"
)

// Route patterns for the names in URLs: the same rules as the engine's,
// so a name can never bend a Vault path.
var (
	orgVar     = contract.OrgVar()
	nameVar    = contract.CredVar("name")
	serviceVar = contract.ServiceVar("service")
)

// routes lists every route the portal serves, so its whole surface is
// visible in one place, and wraps them in the middleware they share.
// Long on purpose: every route of the portal, in one table.
func (s *Server) routes() (http.Handler, error) {
	r := s.router
	r.Use(nameRoute)
	s.broker = newBrokerHandler(s.cfg.VaultAddr, s.cfg.EdgeKey, s.PublicURL, s.logger)
	s.broker.roots = s.cfg.OutboundRoots
	s.mcpAuth = newMCPAuth(s)

	// Pages, and the JSON API that mirrors them, get the security headers
	// and the cross-origin check; the broker (agents, no cookies) does not.
	app := r.NewRoute().MatcherFunc(notBroker).Subrouter()
	csrf, err := s.csrf()
	if err != nil {
		return nil, err
	}
	app.Use(securePages, csrf)

	app.HandleFunc("/healthz", s.handleHealthz).Methods(http.MethodGet)
	app.Handle("/metrics", s.metrics.handler()).Methods(http.MethodGet)
	static, _ := fs.Sub(staticFS, "static")
	app.PathPrefix("/static/").Handler(cacheStatic(http.StripPrefix("/static/", http.FileServerFS(static)))).Methods(http.MethodGet)

	app.HandleFunc("/signin", s.handleSignInForm).Methods(http.MethodGet)
	app.HandleFunc("/signin", s.handleSignIn).Methods(http.MethodPost)
	app.HandleFunc("/signout", s.handleSignOut).Methods(http.MethodPost)
	app.HandleFunc("/oauth/callback", s.handleOAuthCallback).Methods(http.MethodGet)
	app.HandleFunc(clientMetadataPath, s.handleClientMetadata).Methods(http.MethodGet)
	app.Handle("/", s.signedIn(s.handleHome)).Methods(http.MethodGet)
	app.Handle("/orgs", s.signedIn(s.handleSwitchOrg)).Methods(http.MethodGet)

	org := "/orgs/" + orgVar
	cred := org + "/creds/" + nameVar
	app.Handle(org+"/creds", s.signedIn(s.handleCreds)).Methods(http.MethodGet)
	app.Handle(org+"/add", s.signedIn(s.handleAddPick)).Methods(http.MethodGet)
	app.Handle(org+"/add/"+serviceVar+"", s.signedIn(s.handleAddForm)).Methods(http.MethodGet)
	app.Handle(org+"/add/"+serviceVar+"", s.signedIn(s.handleAdd)).Methods(http.MethodPost)
	app.Handle(cred, s.signedIn(s.handleCred)).Methods(http.MethodGet)
	app.Handle(cred+"/edit", s.signedIn(s.handleEditForm)).Methods(http.MethodGet)
	app.Handle(cred+"/edit", s.signedIn(s.handleEdit)).Methods(http.MethodPost)
	app.Handle(cred+"/connect", s.signedIn(s.handleConnectForm)).Methods(http.MethodGet)
	app.Handle(cred+"/connect", s.signedIn(s.handleConnect)).Methods(http.MethodPost)
	app.Handle(cred+"/disconnect", s.signedIn(s.handleCredConfirm("disconnect"))).Methods(http.MethodGet)
	app.Handle(cred+"/disconnect", s.signedIn(s.handleDisconnect)).Methods(http.MethodPost)
	app.Handle(cred+"/delete", s.signedIn(s.handleCredConfirm("delete"))).Methods(http.MethodGet)
	app.Handle(cred+"/delete", s.signedIn(s.handleDelete)).Methods(http.MethodPost)
	app.Handle(cred+"/verify", s.signedIn(s.handleCredAction("verify"))).Methods(http.MethodPost)
	app.Handle(cred+"/refresh", s.signedIn(s.handleCredAction("refresh"))).Methods(http.MethodPost)
	app.Handle(org+"/apps", s.signedIn(s.handleApps)).Methods(http.MethodGet)
	app.Handle(org+"/apps", s.signedIn(s.handleAddApp)).Methods(http.MethodPost)
	app.Handle(org+"/apps/"+nameVar+"/delete", s.signedIn(s.handleAppConfirmDelete)).Methods(http.MethodGet)
	app.Handle(org+"/apps/"+nameVar+"/delete", s.signedIn(s.handleDeleteApp)).Methods(http.MethodPost)
	app.Handle(org+"/webhooks", s.signedIn(s.handleWebhooks)).Methods(http.MethodGet)
	app.Handle(org+"/webhooks", s.signedIn(s.handleAddWebhook)).Methods(http.MethodPost)
	app.Handle(org+"/webhooks/"+nameVar+"/test", s.signedIn(s.handleTestWebhook)).Methods(http.MethodPost)
	app.Handle(org+"/webhooks/"+nameVar+"/delete", s.signedIn(s.handleWebhookConfirmDelete)).Methods(http.MethodGet)
	app.Handle(org+"/webhooks/"+nameVar+"/delete", s.signedIn(s.handleDeleteWebhook)).Methods(http.MethodPost)
	app.Handle(org+"/refresh-failing", s.signedIn(s.handleRefreshFailing)).Methods(http.MethodPost)
	app.Handle(org+"/approvals", s.signedIn(s.handleApprovals)).Methods(http.MethodGet)
	app.Handle(org+"/approvals/{approval:[0-9a-f]{24}}", s.signedIn(s.handleApproval)).Methods(http.MethodGet)
	app.Handle(org+"/approvals/{approval:[0-9a-f]{24}}/{decision:approve|deny}", s.signedIn(s.handleDecideApproval)).Methods(http.MethodPost)
	app.Handle(org+"/kill-switch", s.signedIn(s.handleKillSwitch)).Methods(http.MethodGet)
	app.Handle(org+"/kill-switch", s.signedIn(s.handlePullKillSwitch)).Methods(http.MethodPost)
	app.Handle(org+"/kill-switch/{job:[0-9a-f]{16}}", s.signedIn(s.handleRevokeJob)).Methods(http.MethodGet)
	app.Handle(org+"/agents", s.signedIn(s.handleAgents)).Methods(http.MethodGet)
	app.Handle(org+"/agents", s.signedIn(s.handleAddAgent)).Methods(http.MethodPost)
	app.Handle(org+"/agents/"+nameVar+"/trail", s.signedIn(s.handleAgentTrail)).Methods(http.MethodGet)
	app.Handle(org+"/agents/"+nameVar+"/trail.jsonl", s.signedIn(s.handleAgentTrailExport)).Methods(http.MethodGet)
	app.Handle(org+"/agents/"+nameVar+"/delete", s.signedIn(s.handleAgentConfirmDelete)).Methods(http.MethodGet)
	app.Handle(org+"/agents/"+nameVar+"/delete", s.signedIn(s.handleDeleteAgent)).Methods(http.MethodPost)
	app.Handle(org+"/agents/mcp/{grant:[0-9a-f]{32}}/disconnect", s.signedIn(s.handleDisconnectMCP)).Methods(http.MethodPost)
	app.Handle(oauthPrefix+"/authorize", s.signedIn(s.mcpAuth.handleAuthorize)).Methods(http.MethodGet, http.MethodPost)

	// The JSON API for scripts: the same operations as the pages, with a
	// Vault token in Authorization: Bearer (or X-Vault-Token), or the
	// session cookie.
	api := "/api/v1"
	aorg := api + "/orgs/" + orgVar
	acred := aorg + "/creds/" + nameVar
	app.Handle(api+"/orgs", s.apiAuth(s.apiOrgs)).Methods(http.MethodGet)
	app.Handle(aorg+"/creds", s.apiAuth(s.apiListCreds)).Methods(http.MethodGet)
	app.Handle(aorg+"/creds", s.apiAuth(s.apiCreateCred)).Methods(http.MethodPost)
	app.Handle(acred, s.apiAuth(s.apiReadCred)).Methods(http.MethodGet)
	app.Handle(acred, s.apiAuth(s.apiUpdateCred)).Methods(http.MethodPatch, http.MethodPut)
	app.Handle(acred, s.apiAuth(s.apiDeleteCred)).Methods(http.MethodDelete)
	app.Handle(acred+"/{action:connect|disconnect|refresh|verify}", s.apiAuth(s.apiCredAction)).Methods(http.MethodPost)
	app.Handle(aorg+"/services", s.apiAuth(s.apiServices)).Methods(http.MethodGet)
	app.Handle(aorg+"/services/"+serviceVar+"", s.apiAuth(s.apiService)).Methods(http.MethodGet)
	app.Handle(aorg+"/apps", s.apiAuth(s.apiApps)).Methods(http.MethodGet)
	app.Handle(aorg+"/apps/"+nameVar, s.apiAuth(s.apiReadApp)).Methods(http.MethodGet)
	app.Handle(aorg+"/apps/"+nameVar, s.apiAuth(s.apiWriteApp)).Methods(http.MethodPut)
	app.Handle(aorg+"/apps/"+nameVar, s.apiAuth(s.apiDeleteApp)).Methods(http.MethodDelete)
	app.Handle(aorg+"/agents", s.apiAuth(s.apiAgents)).Methods(http.MethodGet)
	app.Handle(aorg+"/agents", s.apiAuth(s.apiCreateAgent)).Methods(http.MethodPost)
	app.Handle(aorg+"/agents/"+nameVar, s.apiAuth(s.apiDeleteAgent)).Methods(http.MethodDelete)
	app.PathPrefix(api + "/").Handler(s.apiAuth(s.apiNotFound))

	app.NotFoundHandler = securePages(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.renderError(w, r, http.StatusNotFound, "There is no such page.")
	}))

	// The agents' routes (/broker/... and /mcp/...) are registered on r,
	// below this line: MCP tool calls go through the same edge.
	r.PathPrefix("/broker/").Handler(s.broker)
	s.mcp = newMCPServer(s.broker, s.mcpAuth, s.PublicURL, s.logger)
	r.PathPrefix("/mcp/").Handler(s.mcp)
	// The OAuth server's endpoints for clients (not people): no cookies,
	// any origin.
	r.PathPrefix("/.well-known/").HandlerFunc(s.mcpAuth.handleWellKnown)
	r.HandleFunc(oauthPrefix+"/token", s.mcpAuth.handleToken).Methods(http.MethodPost, http.MethodOptions)
	r.HandleFunc(oauthPrefix+"/register", s.mcpAuth.handleRegister).Methods(http.MethodPost, http.MethodOptions)

	return s.observe(s.recoverPanics(r)), nil
}

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// notBroker keeps the page middleware off the agents' routes (the broker,
// MCP and the OAuth server's client endpoints), which take tokens, never
// cookies.
func notBroker(r *http.Request, _ *mux.RouteMatch) bool {
	p := r.URL.Path
	return !strings.HasPrefix(p, "/broker/") && !strings.HasPrefix(p, "/mcp/") && !strings.HasPrefix(p, "/.well-known/") &&
		p != oauthPrefix+"/token" && p != oauthPrefix+"/register"
}

// cacheStatic lets browsers keep the embedded assets for an hour.
func cacheStatic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		next.ServeHTTP(w, r)
	})
}
