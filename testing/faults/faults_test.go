// Package faults is the fault suite (make test-faults): a three-node Raft
// cluster of real Vault servers, agents calling the broker through one
// portal per node, OAuth grants with rotating refresh tokens being
// refreshed, and then, one after the other, the failures a production
// cluster meets. After each, every credential must be intact and usable
// and no grant lost; the broker's failed calls are counted per fault.
package faults

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/harness"
	"github.com/clankteam/credentials/testing/oauthserver"
	"github.com/clankteam/credentials/testing/upstream"
)

const (
	org        = "acme"
	apiKeys    = 60
	passwords  = 20
	files      = 20
	grants     = 10
	agentLoops = 8
	clientID   = "faults-client"
	clientSec  = "faults-client-secret-CANARY"
)

// suite is the running system the faults are applied to.
type suite struct {
	t       *testing.T
	c       *harness.Cluster
	idp     *oauthserver.Server
	up      *upstream.Server
	portals map[*harness.Node]string
	token   string
	creds   []string

	// target is the node under fault, which agents do not call (a load
	// balancer's health check would take it out).
	target atomic.Pointer[harness.Node]
	log    callLog
}

// call is one broker call as an agent saw it.
type call struct {
	at     time.Time
	failed bool
	why    string
}

type callLog struct {
	mu    sync.Mutex
	calls []call
}

func (l *callLog) add(c call) {
	l.mu.Lock()
	l.calls = append(l.calls, c)
	l.mu.Unlock()
}

// since returns the calls made at or after t.
func (l *callLog) since(t time.Time) []call {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []call
	for _, c := range l.calls {
		if !c.at.Before(t) {
			out = append(out, c)
		}
	}
	return out
}

// TestFaults runs the suite; it needs CREDENTIALS_FAULTS=1 (make
// test-faults sets it), since it takes minutes.
func TestFaults(t *testing.T) {
	if os.Getenv("CREDENTIALS_FAULTS") != "1" {
		t.Skip("the fault suite runs with make test-faults (CREDENTIALS_FAULTS=1)")
	}
	s := newSuite(t)
	ctx, stop := context.WithCancel(context.Background())
	var agents sync.WaitGroup
	for i := range agentLoops {
		agents.Add(1)
		go func() { defer agents.Done(); s.agent(ctx, i) }()
	}
	defer func() { stop(); agents.Wait() }()
	time.Sleep(5 * time.Second) // calls and refreshes under way

	faults := []struct {
		name   string
		inject func(ctx context.Context) error
	}{
		{"active node killed (SIGKILL)", s.killActive},
		{"active node frozen past an election (SIGSTOP, SIGCONT)", s.freezeActive},
		{"plugin process killed on the active node", s.killPlugin},
		{"whole cluster restarted from its data", s.restartCluster},
		{"plugin upgraded (register, tune, reload)", s.upgrade},
	}
	var report strings.Builder
	fmt.Fprintf(&report, "\n%-56s %7s %7s %9s %9s %6s %7s\n", "fault", "calls", "failed", "recovery", "refreshes", "creds", "grants")
	for _, f := range faults {
		refusedBefore := s.idp.RefreshRefusals()
		refreshesBefore := s.idp.TokenCallsFor(oauthserver.GrantRefreshToken)
		start := time.Now()
		if err := f.inject(ctx); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		s.target.Store(nil)
		settled := s.settle(start)
		calls := s.log.since(start)
		failed, last, why := 0, start, map[string]int{}
		for _, c := range calls {
			if c.at.After(settled) {
				break
			}
			if c.failed {
				failed++
				last = c.at
				why[c.why]++
			}
		}
		lostCreds := s.checkCreds(ctx)
		lostGrants := s.idp.RefreshRefusals() - refusedBefore
		refreshes := s.idp.TokenCallsFor(oauthserver.GrantRefreshToken) - refreshesBefore
		fmt.Fprintf(&report, "%-56s %7d %7d %8.1fs %9d %6d %7d\n", f.name, len(calls), failed, last.Sub(start).Seconds(), refreshes, lostCreds, lostGrants)
		if failed > 0 {
			fmt.Fprintf(&report, "    failures: %v\n", why)
		}
		if lostCreds != 0 {
			t.Errorf("%s: %d credentials lost or unreadable", f.name, lostCreds)
		}
		if lostGrants != 0 {
			t.Errorf("%s: %d refresh tokens used after they were spent", f.name, lostGrants)
		}
	}
	stop()
	agents.Wait()
	// Every grant still refreshes: none was lost on the way.
	active, err := s.c.WaitActive(context.Background(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i := range grants {
		name := fmt.Sprintf("grant-%02d", i)
		if _, err := active.Client(s.c.RootToken).Logical().Write("orgs/"+org+"/creds/"+name+"/refresh", nil); err != nil {
			t.Errorf("%s no longer refreshes: %v", name, err)
		}
	}
	t.Log(report.String())
}

// Long on purpose: the suite's whole setup, in the order it must happen.
func newSuite(t *testing.T) *suite {
	ctx := context.Background()
	c := harness.StartClusterT(t, harness.ClusterOptions{})
	idp, err := oauthserver.New(oauthserver.Options{
		AutoApprove:         true,
		AccessTokenLifespan: 16 * time.Second, // refreshed every 8 s while used
		Clients:             []oauthserver.Client{{ID: clientID, Secret: clientSec, RedirectURIs: []string{"https://portal.example/oauth/callback"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	up, err := upstream.Start(upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	s := &suite{t: t, c: c, idp: idp, up: up, portals: map[*harness.Node]string{}}

	active, err := c.WaitActive(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	root := active.Client(c.RootToken)
	if err := harness.CreateTestOrg(ctx, root, org); err != nil {
		t.Fatal(err)
	}
	mount := "orgs/" + org
	type write struct {
		path string
		data map[string]any
	}
	writes := []write{
		{mount + "/config", map[string]any{"redirect_url": "https://portal.example/oauth/callback"}},
		{mount + "/services/local", map[string]any{"types": "api_key,password,file", "base_urls": up.URL}},
		{mount + "/services/idp", map[string]any{"types": "oauth2", "base_urls": up.URL, "oauth": map[string]any{
			"auth_url": idp.AuthURL(), "token_url": idp.TokenURL(), "pkce": true, "default_scopes": []any{"read"},
		}}},
		{mount + "/apps/idp-app", map[string]any{"service": "idp", "client_id": clientID, "client_secret": clientSec}},
	}
	for i := range apiKeys {
		writes = append(writes, write{fmt.Sprintf("%s/creds/key-%02d", mount, i), map[string]any{"type": "api_key", "service": "local", "api_key": fmt.Sprintf("sk_test_faults_%04d", i)}})
	}
	for i := range passwords {
		writes = append(writes, write{fmt.Sprintf("%s/creds/login-%02d", mount, i), map[string]any{"type": "password", "service": "local", "username": "u", "password": fmt.Sprintf("pw-faults-%04d", i)}})
	}
	for i := range files {
		writes = append(writes, write{fmt.Sprintf("%s/creds/file-%02d", mount, i), map[string]any{"type": "file", "service": "local", "file": "ZmF1bHRzLWZpbGU=", "filename": "f.txt"}})
	}
	for _, w := range writes {
		if _, err := root.Logical().WriteWithContext(ctx, w.path, w.data); err != nil {
			t.Fatalf("writing %s: %v", w.path, err)
		}
		if strings.Contains(w.path, "/creds/") {
			s.creds = append(s.creds, filepath.Base(w.path))
		}
	}
	for i := range grants {
		name := fmt.Sprintf("grant-%02d", i)
		s.connect(ctx, root, name)
		s.creds = append(s.creds, name)
	}

	var given []string
	for i := 0; i < 10; i++ {
		given = append(given, fmt.Sprintf("key-%02d", i))
	}
	for i := range grants {
		given = append(given, fmt.Sprintf("grant-%02d", i))
	}
	login, err := provision.CreateAgent(ctx, root, org, provision.AgentSpec{Name: "loop", Creds: given})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := active.Client("").Logical().WriteWithContext(ctx, "auth/approle/login", map[string]any{"role_id": login.RoleID, "secret_id": login.SecretID})
	if err != nil {
		t.Fatal(err)
	}
	s.token = sec.Auth.ClientToken

	key, err := egress.ParseEdgePrivateKey(c.EdgeKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		srv, err := portal.NewServer(portal.Config{Addr: "127.0.0.1:0", VaultAddr: n.Addr, EdgeKey: key,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Listen(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve() }()
		t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
		s.portals[n] = srv.URL()
	}
	return s
}

// connect runs an OAuth connect of a new credential against the test
// provider, which approves at once.
func (s *suite) connect(ctx context.Context, root *api.Client, name string) {
	t := s.t
	path := "orgs/" + org + "/creds/" + name
	if _, err := root.Logical().WriteWithContext(ctx, path, map[string]any{"type": "oauth2", "service": "idp", "app": "idp-app"}); err != nil {
		t.Fatal(err)
	}
	sec, err := root.Logical().WriteWithContext(ctx, path+"/connect", map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(sec.Data["auth_url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, err := resp.Location()
	if err != nil {
		t.Fatalf("the provider did not redirect back: %d", resp.StatusCode)
	}
	q := back.Query()
	if _, err := root.Logical().WriteWithContext(ctx, path+"/callback", map[string]any{"code": q.Get("code"), "state": q.Get("state")}); err != nil {
		t.Fatalf("callback of %s: %v", name, err)
	}
}

// agent calls the broker in a loop, through the portals of the nodes not
// under fault, one credential after another.
func (s *suite) agent(ctx context.Context, i int) {
	hc := &http.Client{Timeout: 15 * time.Second}
	for n := i; ctx.Err() == nil; n++ {
		var nodes []*harness.Node
		for _, node := range s.c.Nodes {
			if node != s.target.Load() {
				nodes = append(nodes, node)
			}
		}
		node := nodes[n%len(nodes)]
		cred := fmt.Sprintf("key-%02d", n%10)
		if n%2 == 1 {
			cred = fmt.Sprintf("grant-%02d", n%grants)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.portals[node]+"/broker/"+org+"/"+cred+"/v1/balance", nil)
		req.Header.Set("Authorization", "Bearer "+s.token)
		resp, err := hc.Do(req)
		if ctx.Err() != nil {
			return
		}
		c := call{at: time.Now()}
		switch {
		case err != nil:
			c.failed, c.why = true, "no answer"
		case resp.Header.Get("X-Broker-Error") == "true":
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			c.failed, c.why = true, fmt.Sprintf("%d %s", resp.StatusCode, brokerMessage(body))
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		s.log.add(c)
		time.Sleep(20 * time.Millisecond)
	}
}

func brokerMessage(body []byte) string {
	s := string(body)
	if i := strings.Index(s, `"message":"`); i >= 0 {
		s = s[i+11:]
		if j := strings.IndexByte(s, '"'); j >= 0 {
			s = s[:j]
		}
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// settle waits until the calls have gone 5 s without a failure (at most
// 90 s) and returns when that quiet period began.
func (s *suite) settle(start time.Time) time.Time {
	deadline := start.Add(90 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		lastFail := start
		for _, c := range s.log.since(start) {
			if c.failed {
				lastFail = c.at
			}
		}
		if time.Since(lastFail) > 5*time.Second {
			return time.Now()
		}
	}
	return time.Now()
}

// checkCreds reads every credential written at the start through the
// active node and counts those missing or unreadable.
func (s *suite) checkCreds(ctx context.Context) int {
	active, err := s.c.WaitActive(ctx, time.Minute)
	if err != nil {
		s.t.Fatal(err)
	}
	root := active.Client(s.c.RootToken)
	lost := 0
	for _, name := range s.creds {
		sec, err := root.Logical().ReadWithContext(ctx, "orgs/"+org+"/creds/"+name)
		if err != nil || sec == nil || sec.Data["status"] == "disconnected" {
			lost++
		}
	}
	return lost
}

func (s *suite) killActive(ctx context.Context) error {
	active, err := s.c.WaitActive(ctx, time.Minute)
	if err != nil {
		return err
	}
	s.target.Store(active)
	active.Kill()
	if _, err := s.c.WaitActive(ctx, time.Minute); err != nil {
		return err
	}
	if err := s.c.Restart(ctx, active); err != nil {
		return err
	}
	return s.c.WaitAllUnsealed(ctx, time.Minute)
}

func (s *suite) freezeActive(ctx context.Context) error {
	active, err := s.c.WaitActive(ctx, time.Minute)
	if err != nil {
		return err
	}
	s.target.Store(active)
	if err := active.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	// Frozen until another node has taken over, and a while longer.
	deadline := time.Now().Add(time.Minute)
	for {
		if n, err := s.c.Active(ctx); err == nil && n != active {
			break
		}
		if time.Now().After(deadline) {
			_ = active.Signal(syscall.SIGCONT)
			return fmt.Errorf("no new leader while %s was frozen", active.Name)
		}
		time.Sleep(250 * time.Millisecond)
	}
	time.Sleep(5 * time.Second)
	if err := active.Signal(syscall.SIGCONT); err != nil {
		return err
	}
	return s.c.WaitAllUnsealed(ctx, time.Minute)
}

func (s *suite) killPlugin(ctx context.Context) error {
	active, err := s.c.WaitActive(ctx, time.Minute)
	if err != nil {
		return err
	}
	pids := active.PluginPids()
	if len(pids) == 0 {
		return fmt.Errorf("no plugin process on %s", active.Name)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return nil
}

func (s *suite) restartCluster(ctx context.Context) error {
	for _, n := range s.c.Nodes {
		n.Stop()
	}
	for _, n := range s.c.Nodes {
		if err := s.c.Restart(ctx, n); err != nil {
			return err
		}
	}
	if _, err := s.c.WaitActive(ctx, time.Minute); err != nil {
		return err
	}
	return s.c.WaitAllUnsealed(ctx, time.Minute)
}

// upgrade builds the engine as v0.2.0, registers it beside the running
// one, moves the mount to it and reloads, as an operator upgrades.
func (s *suite) upgrade(ctx context.Context) error {
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	bin := filepath.Join(s.t.TempDir(), "engine-v0.2.0")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-X github.com/clankteam/credentials/plugin.Version=v0.2.0",
		"-o", bin, "./cmd/"+harness.PluginBinaryName)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building v0.2.0: %v\n%s", err, out)
	}
	path, err := s.c.InstallPlugin(ctx, bin, harness.PluginBinaryName+"-v0.2.0")
	if err != nil {
		return err
	}
	if err := s.c.RegisterPlugin(ctx, path, "v0.2.0"); err != nil {
		return err
	}
	active, err := s.c.WaitActive(ctx, time.Minute)
	if err != nil {
		return err
	}
	c := active.Client(s.c.RootToken)
	if err := c.Sys().TuneMountAllowNilWithContext(ctx, "orgs/"+org, api.TuneMountConfigInput{PluginVersion: new("v0.2.0")}); err != nil {
		return fmt.Errorf("tuning the mount: %w", err)
	}
	if _, err := c.Sys().ReloadPluginWithContext(ctx, &api.ReloadPluginInput{Mounts: []string{"orgs/" + org}}); err != nil {
		return fmt.Errorf("reloading: %w", err)
	}
	m, err := c.Sys().GetMountWithContext(ctx, "orgs/"+org)
	if err != nil {
		return err
	}
	if m.RunningVersion != "v0.2.0" {
		return fmt.Errorf("the mount runs %q after the upgrade", m.RunningVersion)
	}
	return nil
}
