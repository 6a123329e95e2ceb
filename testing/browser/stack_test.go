// Package browser tests the portal end to end: a real Vault with the engine
// (testing/harness), the real test authorization server
// (testing/oauthserver), the portal, and headless Debian Chromium driven with
// chromedp. Every page the flow visits is screenshotted into
// testing/artifacts/browser/ and checked with axe-core.
//
// Set SKIP_BROWSER_TESTS=1 to skip the browser tests (they then say so
// loudly); without it a missing Chromium or axe-core fails the run.
package browser

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/harness"
	"github.com/clankteam/credentials/testing/oauthserver"
)

// Canaries are planted as secrets; no page, log or API answer may show them.
const (
	canaryAPIKey       = "sk_test_CANARY_apikey_5f3c9e1d"
	canaryClientSecret = "CANARY-client-secret-8a7b6c"
	canaryFile         = "CANARY-file-content-2d4e6f"
	canaryPassword     = "CANARY-password-0a1b2c"
)

var canaries = []string{canaryAPIKey, canaryClientSecret, canaryFile, canaryPassword}

const (
	org       = "acme"
	otherOrg  = "beta"
	adminUser = "alice"
	adminPass = "alice-password-1"
	member    = "bob"
	memberPw  = "bob-password-1"
	// oauthService is a custom catalog service whose OAuth endpoints are the
	// test authorization server's.
	oauthService = "testprov"
	oauthApp     = "testprov-app"
	oauthClient  = "portal-test-client"
	fileService  = "certs"
)

// stack is the running product the tests share.
type stack struct {
	vault      *harness.Vault
	oauth      *oauthserver.Server
	portal     *portal.Server
	sessionKey []byte
	logs       *syncBuffer
}

var st *stack

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if skipBrowser() {
		fmt.Fprintln(os.Stderr, strings.Repeat("!", 72))
		fmt.Fprintln(os.Stderr, "!! SKIP_BROWSER_TESTS=1: the browser tests of testing/browser are SKIPPED.")
		fmt.Fprintln(os.Stderr, "!! Nothing checked the portal in a real browser in this run.")
		fmt.Fprintln(os.Stderr, strings.Repeat("!", 72))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := startStack(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the stack:", err)
		if s != nil {
			s.stop()
		}
		return 1
	}
	st = s
	code := m.Run()
	if err := s.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the stack:", err)
		if code == 0 {
			code = 1
		}
	}
	if code == 0 {
		if leaked := s.logs.leaks(); leaked != "" {
			fmt.Fprintln(os.Stderr, "the portal's log shows a planted secret:", leaked)
			code = 1
		}
	}
	return code
}

func skipBrowser() bool { return os.Getenv("SKIP_BROWSER_TESTS") == "1" }

func startStack(ctx context.Context) (*stack, error) {
	s := &stack{logs: &syncBuffer{}}
	var err error
	if s.vault, err = harness.Start(ctx, harness.Options{}); err != nil {
		return nil, err
	}
	if s.oauth, err = oauthserver.New(oauthserver.Options{}); err != nil {
		return s, err
	}
	s.sessionKey = make([]byte, 32)
	if _, err := rand.Read(s.sessionKey); err != nil {
		return s, err
	}
	s.portal, err = portal.NewServer(portal.Config{
		Addr:       "127.0.0.1:0",
		VaultAddr:  s.vault.Addr,
		SessionKey: s.sessionKey,
		EdgeKey:    s.vault.PortalEdgeKey(),
		// Every test signs in from 127.0.0.1; the limit itself is tested
		// in the portal's own tests.
		SignInsPerMinute: 1000,
		// MCP clients' metadata documents are served by the tests from
		// 127.0.0.1 with the test CA.
		PrivateTargets: "127.0.0.0/8",
		OutboundRoots:  s.vault.CA.Pool(),
		Logger:         slog.New(slog.NewTextHandler(s.logs, nil)),
	})
	if err != nil {
		return s, err
	}
	if err := s.portal.Listen(); err != nil {
		return s, err
	}
	go func() { _ = s.portal.Serve() }()
	if err := s.oauth.AddClient(oauthClient, canaryClientSecret, []string{s.portal.CallbackURL()}, nil); err != nil {
		return s, err
	}
	return s, s.provision(ctx)
}

// provision makes two orgs, an admin of both and a member of one, and the
// custom services the flow uses.
func (s *stack) provision(ctx context.Context) error {
	root := s.vault.Client()
	for _, o := range []string{org, otherOrg} {
		if err := harness.CreateTestOrg(ctx, root, o); err != nil {
			return err
		}
		if err := provision.CreatePerson(ctx, root, o, adminUser, adminPass, provision.RoleAdmin); err != nil {
			return err
		}
	}
	if err := provision.CreatePerson(ctx, root, org, member, memberPw, provision.RoleMember); err != nil {
		return err
	}
	// Agent management is granted apart from the admin role, to trusted
	// people: alice is one in acme.
	user, err := root.Logical().ReadWithContext(ctx, "auth/userpass/users/"+adminUser)
	if err != nil {
		return err
	}
	policies := []string{provision.AgentsPolicy(org)}
	for _, p := range user.Data["token_policies"].([]any) {
		policies = append(policies, p.(string))
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/userpass/users/"+adminUser, map[string]any{
		"token_policies": strings.Join(policies, ","),
	}); err != nil {
		return err
	}
	writes := []struct {
		path string
		data map[string]any
	}{
		{"orgs/" + org + "/services/" + oauthService, map[string]any{
			"display_name": "Test Provider",
			"types":        "oauth2",
			"base_urls":    s.oauth.URL(),
			"injection":    map[string]any{"oauth2": map[string]any{"style": "header", "header": "Authorization", "format": "Bearer {secret}"}},
			"oauth": map[string]any{
				"auth_url":       s.oauth.AuthURL(),
				"token_url":      s.oauth.TokenURL(),
				"revoke_url":     s.oauth.RevokeURL(),
				"revoke_style":   "rfc7009",
				"userinfo_url":   s.oauth.UserinfoURL(),
				"default_scopes": []string{"read", "write"},
				"pkce":           true,
			},
		}},
		{"orgs/" + org + "/services/" + fileService, map[string]any{
			"display_name": "Cert Store",
			"types":        "file",
			"base_urls":    "https://certs.example.test",
		}},
		{"orgs/" + org + "/apps/" + oauthApp, map[string]any{
			"service": oauthService, "client_id": oauthClient, "client_secret": canaryClientSecret,
		}},
	}
	for _, w := range writes {
		if _, err := root.Logical().WriteWithContext(ctx, w.path, w.data); err != nil {
			return fmt.Errorf("writing %s: %w", w.path, err)
		}
	}
	return nil
}

func (s *stack) stop() error {
	var errs []string
	if s.portal != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.portal.Shutdown(ctx); err != nil {
			errs = append(errs, err.Error())
		}
		cancel()
	}
	if s.oauth != nil {
		s.oauth.Close()
	}
	if s.vault != nil {
		if err := s.vault.Stop(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// root is an operator's client, for setting up and checking state.
func (s *stack) root() *api.Client { return s.vault.Client() }

// url is an absolute portal URL.
func (s *stack) url(path string) string { return s.portal.URL() + path }

// artifactsDir is where screenshots go: testing/artifacts/browser (gitignored).
func artifactsDir(tb testing.TB) string {
	root, err := harness.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(root, "testing", "artifacts", "browser")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// syncBuffer collects the portal's log for the canary check.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) leaks() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return findCanary(b.buf.String())
}

// findCanary returns the first planted secret s contains, or "".
func findCanary(s string) string {
	for _, c := range canaries {
		if strings.Contains(s, c) {
			return c
		}
	}
	return ""
}

var _ io.Writer = (*syncBuffer)(nil)

// tail is the log's last n bytes, for a failure's message.
func (b *syncBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}
