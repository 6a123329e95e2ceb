// Command bench measures the broker against its floor, in one run, on one
// machine: the same local upstream and the same Vault for every scenario.
//
//	go run ./testing/bench [-n 2000] [-d 5s] [-c 32]
//
// Scenarios:
//
//	direct   GET upstream /v1/ping with the real key (no broker)
//	floor    GET Vault /v1/orgs/<org>/config: one Vault request into the plugin
//	edge     GET portal /broker/<org>/<cred>/v1/ping with an agent's token
//	vault    POST Vault /v1/orgs/<org>/proxy/<cred>/GET/v1/ping with an agent's token
//	check    POST Vault /v1/sys/capabilities-self for the edge call's path: the
//	         Vault request the edge makes per call once the injection is kept
//	check-then-direct
//	         the check, then the direct call: the floor of any design in
//	         which Vault decides a call before the service sees it, with
//	         the idle machine's wake-ups between the two included
//
// For each: p50 and p99 latency at concurrency 1 (-n calls) and throughput
// at concurrency -c (for -d), in -rounds interleaved rounds (medians are
// reported), with the CPU each process spent per call at concurrency -c.
// Then: time to the first server-sent event, a 1 MiB answer, and the
// portal's memory while -downloads concurrent 50 MB downloads stream
// through the edge. The plugin is built without the race detector, as it
// runs in production.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/harness"
	"github.com/clankteam/credentials/testing/smtpserver"
	"github.com/clankteam/credentials/testing/tlsca"
	"github.com/clankteam/credentials/testing/upstream"
)

// peer is another broker measured beside ours in the same run.
var peer struct {
	proxy, token, host string
	// tlsHost and caFile are for the peer's MITM mode.
	tlsHost, caFile string
	pid             int
}

var upstreamAddr, upstreamTLSAddr, upstreamCADir string

const (
	org  = "bench"
	cred = "key"
	// credGuarded is cred behind an approval rule and a limit.
	credGuarded = "key-guarded"
	apiKey      = "sk_test_BENCHbench0123456789abcd"
	warmups     = 200
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	n := flag.Int("n", 2000, "calls per scenario at concurrency 1")
	d := flag.Duration("d", 5*time.Second, "duration per scenario at concurrency -c")
	conc := flag.Int("c", 32, "concurrency for throughput")
	only := flag.String("only", "", "comma-separated scenarios to run (direct,floor,floor-approle,check,check-then-direct,edge,edge-guarded,vault,proxy,direct-tls,proxy-tls,mcp,mcp-oauth,mail,remote-direct,remote-floor,remote-mcp,remote-stateless-direct,remote-stateless-mcp); default all")
	rounds := flag.Int("rounds", 3, "interleaved rounds of the scenarios")
	downloads := flag.Int("downloads", 32, "concurrent 50 MB downloads for the memory measurement (0: skip)")
	extras := flag.Bool("extras", true, "measure the first streamed event, 1 MiB answers and download memory")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the bench process (portal, clients, upstream) to this file")
	vaultProfile := flag.String("vaultprofile", "", "write a CPU profile of the Vault server (sys/pprof/profile) over the first -vaultprofile-seconds of the scenarios to this file")
	vaultProfileSeconds := flag.Int("vaultprofile-seconds", 20, "seconds of Vault's CPU profile")
	flag.StringVar(&upstreamAddr, "upstream-addr", "", "address of the fake upstream (default: a free 127.0.0.1 port); the peer's service must name its port")
	flag.StringVar(&peer.proxy, "peer-proxy", "", "a peer broker's forward proxy (Agent Vault: http://127.0.0.1:14322), measured as scenario peer (scripts/bench-peer.sh sets these)")
	flag.StringVar(&peer.token, "peer-token", "", "the peer's agent token, sent as Proxy-Authorization: Bearer")
	flag.IntVar(&peer.pid, "peer-pid", 0, "the peer's process id, for its CPU per call")
	flag.StringVar(&peer.host, "peer-host", "", "host:port the peer's service rule names; it must resolve, for the peer, to the fake upstream")
	flag.StringVar(&peer.tlsHost, "peer-tls-host", "", "host:port the peer's service rule for the HTTPS upstream names (scenario peer-tls, through its MITM proxy)")
	flag.StringVar(&peer.caFile, "peer-ca", "", "the peer's MITM CA certificate (PEM), for scenario peer-tls")
	flag.StringVar(&upstreamTLSAddr, "upstream-tls-addr", "", "address of the HTTPS fake upstream (default: a free 127.0.0.1 port)")
	flag.StringVar(&upstreamCADir, "upstream-ca", "", "a CA directory from -write-upstream-ca that signs the HTTPS upstream's certificate (default: the Vault harness's CA)")
	writeCA := flag.String("write-upstream-ca", "", "write a CA for -upstream-ca to this directory, with bundle.pem for a peer's SSL_CERT_FILE, and exit")
	flag.Parse()
	if *writeCA != "" {
		ca, err := tlsca.New()
		if err == nil {
			err = ca.Save(*writeCA)
		}
		return err
	}
	ctx := context.Background()

	st, err := setUp(ctx)
	if err != nil {
		return err
	}
	defer st.stop()

	var scenarios []scenario
	for _, sc := range st.scenarios() {
		if *only == "" || strings.Contains(","+*only+",", ","+sc.name+",") {
			scenarios = append(scenarios, sc)
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *vaultProfile != "" {
		wait, err := st.profileVault(*vaultProfile, *vaultProfileSeconds)
		if err != nil {
			return err
		}
		defer func() {
			if err := wait(); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}()
	}
	perRound := make([][]result, len(scenarios))
	for round := 0; round < *rounds; round++ {
		for i, sc := range scenarios {
			fmt.Fprintf(os.Stderr, "round %d: %s...\n", round+1, sc.name)
			r, err := st.measure(ctx, sc, *n, *conc, *d)
			if err != nil {
				return fmt.Errorf("%s: %w", sc.name, err)
			}
			perRound[i] = append(perRound[i], r)
		}
	}
	var results []result
	for _, rs := range perRound {
		results = append(results, median(rs))
	}
	printTable(os.Stdout, results, *n, *conc, *d, *rounds)
	if !*extras {
		return nil
	}
	return st.extras(ctx, os.Stdout, *rounds, *downloads)
}

// stack is what the scenarios call.
type stack struct {
	vault      *harness.Vault
	up         *upstream.Server
	portal     *portal.Server
	portalURL  string
	agentToken string
	// guardedToken is an agent's token for credGuarded alone.
	guardedToken string
	adminToken   string
	// roleToken is an AppRole login's token holding the admin policy: the
	// same kind of token as an agent's (with an entity), for the floor.
	roleToken string
	client    *http.Client
	// proxyClient sends through the portal's forward proxy.
	proxyClient *http.Client
	// upTLS is the fake upstream over HTTPS; tlsClient calls it directly
	// and proxyTLS through the proxy's intercepted tunnels, trusting the
	// org's proxy CA in proxyCADir.
	upTLS *upstream.Server
	// upCA signs the HTTPS upstream's certificate.
	upCA                *tlsca.CA
	tlsClient, proxyTLS *http.Client
	proxyCADir          string
	// peerClient sends through the peer's forward proxy; peerTLS through
	// its intercepted tunnels.
	peerClient, peerTLS *http.Client
	// smtp receives the mail scenario's messages.
	smtp *smtpserver.Server
	// mcpClient holds the mcp-oauth scenario's OAuth tokens.
	mcpClient *mcpOAuth
	// remote is the remote MCP server of the remote-* scenarios.
	remote *remoteBench
	tmp    string
}

func setUp(ctx context.Context) (*stack, error) {
	tmp, err := os.MkdirTemp("", "credentials-bench-")
	if err != nil {
		return nil, err
	}
	st := &stack{tmp: tmp}
	pluginBin := filepath.Join(tmp, harness.PluginBinaryName)
	fmt.Fprintln(os.Stderr, "building the plugin (no race detector)...")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", pluginBin, "./cmd/"+harness.PluginBinaryName)
	if root, err := harness.RepoRoot(); err == nil {
		build.Dir = root
	}
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the plugin: %w\n%s", err, out)
	}
	if st.vault, err = harness.Start(ctx, harness.Options{PluginBinary: pluginBin}); err != nil {
		return nil, err
	}
	if st.up, err = upstream.Start(upstream.Options{Key: apiKey, Addr: upstreamAddr}); err != nil {
		st.stop()
		return nil, err
	}
	if err := st.startTLSUpstream(); err != nil {
		st.stop()
		return nil, err
	}
	if err := st.startSMTP(); err != nil {
		st.stop()
		return nil, err
	}
	if err := st.provision(ctx); err != nil {
		st.stop()
		return nil, err
	}
	st.portal, err = portal.NewServer(portal.Config{
		Addr: "127.0.0.1:0", VaultAddr: st.vault.Addr, EdgeKey: st.vault.PortalEdgeKey(),
		ProxyAddr: "127.0.0.1:0", ProxyCADir: st.proxyCADir, OutboundRoots: st.outboundRoots(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err == nil {
		err = st.portal.Listen()
	}
	if err != nil {
		st.stop()
		return nil, err
	}
	go func() { _ = st.portal.Serve() }()
	st.portalURL = st.portal.URL()
	st.client = &http.Client{Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute,
	}}
	if st.mcpClient, err = st.signInMCPClient(ctx); err != nil {
		st.stop()
		return nil, fmt.Errorf("signing an MCP client in by OAuth: %w", err)
	}
	if err := st.setUpRemote(ctx); err != nil {
		st.stop()
		return nil, fmt.Errorf("connecting a remote MCP server: %w", err)
	}
	// The portal's forward proxy, as a program with HTTPS_PROXY would
	// use it (the scenario proxy).
	ours, err := url.Parse(st.portal.ProxyURL())
	if err != nil {
		st.stop()
		return nil, err
	}
	ours.User = url.UserPassword(org, st.agentToken)
	st.proxyClient = &http.Client{Transport: &http.Transport{
		Proxy:        http.ProxyURL(ours),
		MaxIdleConns: 256, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute,
	}}
	if err := st.proxyTLSClients(ours); err != nil {
		st.stop()
		return nil, err
	}
	if peer.proxy != "" {
		proxy, err := url.Parse(peer.proxy)
		if err != nil {
			st.stop()
			return nil, fmt.Errorf("-peer-proxy: %w", err)
		}
		st.peerClient = &http.Client{Transport: &http.Transport{
			Proxy:        http.ProxyURL(proxy),
			MaxIdleConns: 256, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute,
		}}
		if err := st.peerTLSClient(proxy); err != nil {
			st.stop()
			return nil, err
		}
	}
	return st, nil
}

func (st *stack) provision(ctx context.Context) error {
	root := st.vault.Client()
	if err := provision.CreateOrg(ctx, root, org); err != nil {
		return err
	}
	mount := contract.Mount(org)
	writes := []struct {
		path string
		data map[string]interface{}
	}{
		{mount + "/services/local", map[string]interface{}{"types": "api_key", "base_urls": st.up.URL}},
		{mount + "/creds/" + cred, map[string]interface{}{"type": "api_key", "service": "local", "api_key": apiKey}},
		{mount + "/services/local-tls", map[string]interface{}{"types": "api_key", "base_urls": st.upTLS.URL}},
		{mount + "/creds/" + credTLS, map[string]interface{}{"type": "api_key", "service": "local-tls", "api_key": apiKey}},
		{mount + "/creds/" + mailer, st.mailerCred()},
		// The same service behind guardrails: an approval rule the calls
		// do not match and a limit they stay under, both checked on each.
		{mount + "/creds/" + credGuarded, map[string]interface{}{"type": "api_key", "service": "local", "api_key": apiKey}},
		{mount + "/approval-rules/" + credGuarded, map[string]interface{}{"rules": "POST /v1/refunds,DELETE /v1/customers/+"}},
		{mount + "/limits/bench-guarded", map[string]interface{}{"agent": "*", "credential": credGuarded, "calls": 1 << 40, "period": "month"}},
		// Room for the 50 MB downloads of the memory measurement.
		{mount + "/config", map[string]interface{}{"broker_max_body": 64 << 20}},
	}
	for _, w := range writes {
		if _, err := root.Logical().WriteWithContext(ctx, w.path, w.data); err != nil {
			return fmt.Errorf("writing %s: %w", w.path, err)
		}
	}
	// The guarded credential serves the same host as cred: an agent of its
	// own, so that the forward proxy's host decides one credential.
	var err error
	if st.agentToken, err = st.agentLogin(ctx, provision.AgentSpec{Name: "bench", Creds: []string{cred, credTLS, mailer}, TokenTTL: time.Hour}); err != nil {
		return err
	}
	if st.guardedToken, err = st.agentLogin(ctx, provision.AgentSpec{Name: "bench-guarded", Creds: []string{credGuarded}, TokenTTL: time.Hour}); err != nil {
		return err
	}
	// The floor's caller holds the org's admin policy: one policy to
	// evaluate, as the agent has.
	if st.adminToken, err = st.vault.Token(ctx, 2*time.Hour, provision.AdminPolicy(org)); err != nil {
		return err
	}
	// And the same read with an AppRole token, which carries an entity as
	// an agent's does.
	role := "auth/approle/role/bench-floor"
	if _, err := root.Logical().WriteWithContext(ctx, role, map[string]interface{}{
		"token_policies": provision.AdminPolicy(org), "token_ttl": "2h",
	}); err != nil {
		return err
	}
	rid, err := root.Logical().ReadWithContext(ctx, role+"/role-id")
	if err != nil {
		return err
	}
	sid, err := root.Logical().WriteWithContext(ctx, role+"/secret-id", nil)
	if err != nil {
		return err
	}
	s, err := st.vault.ClientWithToken("").Logical().WriteWithContext(ctx, "auth/approle/login", map[string]interface{}{
		"role_id": rid.Data["role_id"], "secret_id": sid.Data["secret_id"],
	})
	if err != nil {
		return err
	}
	st.roleToken = s.Auth.ClientToken
	return nil
}

func (st *stack) stop() {
	if st.remote != nil {
		st.remote.stop()
	}
	if st.portal != nil {
		_ = st.portal.Shutdown(context.Background())
	}
	if st.up != nil {
		st.up.Close()
	}
	if st.upTLS != nil {
		st.upTLS.Close()
	}
	if st.smtp != nil {
		st.smtp.Close()
	}
	if st.vault != nil {
		_ = st.vault.Stop()
	}
	_ = os.RemoveAll(st.tmp)
}

// scenario is one kind of call; call makes one and checks its answer.
type scenario struct {
	name, desc string
	call       func(ctx context.Context) error
}

func (st *stack) scenarios() []scenario {
	proxyBody := []byte(`{}`)
	direct := func(ctx context.Context) error {
		return st.get(ctx, st.up.URL+"/v1/ping", "Authorization", "Bearer "+apiKey, nil)
	}
	checkBody := []byte(`{"paths":["` + contract.CallPath(org, cred, http.MethodGet, "/v1/ping") + `"]}`)
	all := []scenario{
		{"direct", "direct to the upstream", direct},
		{"floor", "Vault read of orgs/<org>/config (floor)", func(ctx context.Context) error {
			return st.get(ctx, st.vault.Addr+"/v1/"+contract.Mount(org)+"/config", "X-Vault-Token", st.adminToken, nil)
		}},
		{"floor-approle", "the same read with an AppRole token (entity)", func(ctx context.Context) error {
			return st.get(ctx, st.vault.Addr+"/v1/"+contract.Mount(org)+"/config", "X-Vault-Token", st.roleToken, nil)
		}},
		{"check", "Vault's check of an edge call alone (sys/capabilities-self)", func(ctx context.Context) error {
			return st.check(ctx, checkBody)
		}},
		{"check-then-direct", "Vault's check, then the direct call (the floor of a call Vault decides first)", func(ctx context.Context) error {
			if err := st.check(ctx, checkBody); err != nil {
				return err
			}
			return direct(ctx)
		}},
		{"edge", "brokered through the portal's edge", func(ctx context.Context) error {
			return st.get(ctx, st.portalURL+"/broker/"+org+"/"+cred+"/v1/ping", "Authorization", "Bearer "+st.agentToken, nil)
		}},
		{"edge-guarded", "the edge, with an approval rule and a limit on the credential", func(ctx context.Context) error {
			return st.get(ctx, st.portalURL+"/broker/"+org+"/"+credGuarded+"/v1/ping", "Authorization", "Bearer "+st.guardedToken, nil)
		}},
		{"vault", "brokered through Vault proxy/<name>/GET/v1/ping", func(ctx context.Context) error {
			return st.get(ctx, st.vault.Addr+"/v1/"+contract.Mount(org)+"/proxy/"+cred+"/GET/v1/ping", "X-Vault-Token", st.agentToken, proxyBody)
		}},
	}
	all = append(all, scenario{"proxy", "through the portal's forward proxy (HTTP_PROXY, plain http)", func(ctx context.Context) error {
		return st.viaProxy(ctx, st.proxyClient, st.up.URL+"/v1/ping")
	}})
	all = append(all, st.proxyTLSScenarios()...)
	all = append(all, st.agentScenarios()...)
	all = append(all, st.remoteScenarios()...)
	if st.peerClient != nil {
		all = append(all, scenario{"peer", "peer: Agent Vault forward proxy", func(ctx context.Context) error {
			return st.peerGet(ctx, "http://"+peer.host+"/v1/ping")
		}})
	}
	if st.peerTLS != nil {
		all = append(all, scenario{"peer-tls", "peer: Agent Vault MITM proxy (HTTPS_PROXY) to the HTTPS upstream", func(ctx context.Context) error {
			return st.getVia(ctx, st.peerTLS, "https://"+peer.tlsHost+"/v1/ping", "Accept", "application/json", nil)
		}})
	}
	return all
}

// check sends the edge's per-call Vault check with the edge agent's token
// and wants "update".
func (st *stack) check(ctx context.Context, body []byte) error {
	return st.checkWith(ctx, st.agentToken, body)
}

func (st *stack) checkWith(ctx context.Context, token string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, st.vault.Addr+"/v1/sys/capabilities-self", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", token)
	resp, err := st.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(out, []byte(`"capabilities":["update"]`)) {
		return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, out)
	}
	return nil
}

// agentLogin creates an agent in the bench's org and logs it in.
func (st *stack) agentLogin(ctx context.Context, spec provision.AgentSpec) (string, error) {
	login, err := provision.CreateAgent(ctx, st.vault.Client(), org, spec)
	if err != nil {
		return "", err
	}
	s, err := st.vault.ClientWithToken("").Logical().WriteWithContext(ctx, "auth/approle/login", map[string]interface{}{
		"role_id": login.RoleID, "secret_id": login.SecretID,
	})
	if err != nil {
		return "", fmt.Errorf("agent login: %w", err)
	}
	return s.Auth.ClientToken, nil
}

// peerGet calls through the peer's forward proxy. The fake upstream
// answers 200 only with the real key, so a 200 proves the peer injected it.
func (st *stack) peerGet(ctx context.Context, url string) error {
	return st.getVia(ctx, st.peerClient, url, "Proxy-Authorization", "Bearer "+peer.token, nil)
}

// viaProxy calls url through the forward proxy c's transport names, with
// the authorization in its URL; a 200 proves the proxy injected the key.
func (st *stack) viaProxy(ctx context.Context, c *http.Client, url string) error {
	return st.getVia(ctx, c, url, "Accept", "application/json", nil)
}

// get sends one request (a POST when body is set) and checks for 200 and,
// for the proxy path, the upstream's 200 inside.
func (st *stack) get(ctx context.Context, url, hdr, val string, body []byte) error {
	return st.getVia(ctx, st.client, url, hdr, val, body)
}

// getVia is get with client c.
func (st *stack) getVia(ctx context.Context, c *http.Client, url, hdr, val string, body []byte) error {
	method := http.MethodGet
	var rd io.Reader
	if body != nil {
		method, rd = http.MethodPost, bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set(hdr, val)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, out)
	}
	if body != nil {
		var v struct {
			Data struct{ Status int } `json:"data"`
		}
		if err := json.Unmarshal(out, &v); err != nil || v.Data.Status != http.StatusOK {
			return fmt.Errorf("proxy answered %.200s", out)
		}
	}
	return nil
}
