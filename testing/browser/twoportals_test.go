package browser

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
)

// TestTwoPortalsServeOneSession: two portal instances with the same
// session and edge keys, behind nothing but their ports, serve one
// signed-in person and one agent interchangeably: a session made on one
// works on the other, a connect started on one completes on the other,
// and the broker answers the agent on both.
// Long on purpose: one story told in order, whose steps depend on the ones before.
func TestTwoPortalsServeOneSession(t *testing.T) {
	second, err := portal.NewServer(portal.Config{
		Addr: "127.0.0.1:0", VaultAddr: st.vault.Addr, SessionKey: st.sessionKey, EdgeKey: st.vault.PortalEdgeKey(),
		SignInsPerMinute: 1000, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = second.Serve() }()
	t.Cleanup(func() { _ = second.Shutdown(context.Background()) })
	first := st.portal.URL()

	// Signed in on the first; the session cookie (host-wide, ports do
	// not separate cookies) is taken by the second.
	person := portalClient(t, adminUser, adminPass)
	resp, err := person.Get(second.URL() + "/orgs/" + org + "/creds")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the second portal answered the first's session with %d", resp.StatusCode)
	}

	// A connect started on the first, its callback answered by the second.
	admin := personToken(t, adminUser, adminPass)
	if status, got := apiCall(t, admin, "POST", "/api/v1/orgs/"+org+"/creds", map[string]any{
		"name": "two-portals", "type": "oauth2", "service": oauthService, "app": oauthApp,
	}); status != 201 {
		t.Fatalf("creating: %d %v", status, got)
	}
	t.Cleanup(func() { apiCall(t, admin, "DELETE", "/api/v1/orgs/"+org+"/creds/two-portals", nil) })
	resp, err = person.PostForm(first+"/orgs/"+org+"/creds/two-portals/connect", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = person.Get(resp.Header.Get("Location") + "&auto=approve")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	callback := strings.Replace(resp.Header.Get("Location"), first, second.URL(), 1)
	if !strings.HasPrefix(callback, second.URL()) {
		t.Fatalf("the provider redirected to %q", resp.Header.Get("Location"))
	}
	resp, err = person.Get(callback)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the second portal's callback answered %d", resp.StatusCode)
	}
	if _, got := apiCall(t, admin, "GET", "/api/v1/orgs/"+org+"/creds/two-portals", nil); got["status"] != "active" {
		t.Fatalf("after the callback on the second portal: %v", got)
	}

	// One agent, both edges.
	login, err := provision.CreateAgent(context.Background(), st.root(), org, provision.AgentSpec{Name: "two-portals", Creds: []string{"two-portals"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = provision.DeleteAgent(context.Background(), st.root(), org, "two-portals") })
	sec, err := st.vault.ClientWithToken("").Logical().Write("auth/approle/login", map[string]any{"role_id": login.RoleID, "secret_id": login.SecretID})
	if err != nil {
		t.Fatal(err)
	}
	for _, base := range []string{first, second.URL()} {
		req, _ := http.NewRequest(http.MethodGet, base+"/broker/"+org+"/two-portals/userinfo", nil)
		req.Header.Set("Authorization", "Bearer "+sec.Auth.ClientToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Broker-Error") != "" {
			t.Errorf("the broker on %s answered %d: %.200s", base, resp.StatusCode, body)
		}
	}
}
