package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/testing/tlsca"
)

// Cluster is a Raft cluster of real Vault servers on 127.0.0.1: the first
// node initialized and unsealed, the others joined to it and unsealed, and
// the engine in every node's plugin_directory, registered once.
type Cluster struct {
	Nodes     []*Node
	RootToken string
	// EdgeKey and CA are as Vault's (the engine is registered with the
	// edge key's public half and trusts the CA).
	EdgeKey string
	CA      *tlsca.CA

	unsealKey string
	dir       string
	vaultBin  string
	env       []string
}

// Node is one server of a Cluster. It can be killed, paused, resumed and
// started again from its data.
type Node struct {
	Name string
	// Addr is the node's http:// API address.
	Addr    string
	LogPath string

	dir, configPath string
	vaultBin        string
	proc            *nodeProcess
}

type nodeProcess struct {
	cmd        *exec.Cmd
	exited     chan struct{}
	reaper     *exec.Cmd
	reaperPipe *os.File
}

// ClusterOptions say how many nodes and which binaries; zero values pick
// three nodes and the defaults of Options.
type ClusterOptions struct {
	Nodes        int
	VaultBinary  string
	PluginBinary string
}

// StartCluster starts the cluster; the caller must call Stop, also when a
// test fails (StartClusterT does).
func StartCluster(ctx context.Context, opts ClusterOptions) (*Cluster, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	vaultBin, err := vaultBinary(opts.VaultBinary)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "credentials-raft-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, vaultBin: vaultBin}
	if err := c.start(ctx, opts); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return c, nil
}

// StartClusterT starts a cluster for one test and stops it when the test
// ends.
func StartClusterT(tb testing.TB, opts ClusterOptions) *Cluster {
	tb.Helper()
	c, err := StartCluster(context.Background(), opts)
	if err != nil {
		tb.Fatalf("starting the raft cluster: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Stop(); err != nil {
			tb.Errorf("stopping the raft cluster: %v", err)
		}
	})
	return c
}

func (c *Cluster) start(ctx context.Context, opts ClusterOptions) error {
	priv, pub, err := egress.GenerateEdgeKey()
	if err != nil {
		return err
	}
	if c.CA, err = tlsca.New(); err != nil {
		return err
	}
	bundle := filepath.Join(c.dir, "ca-bundle.pem")
	if err := c.CA.WriteBundle(bundle); err != nil {
		return err
	}
	c.EdgeKey = priv
	c.env = []string{egress.PrivateTargetsEnv + "=" + TestPrivateTargets, egress.EdgeKeysEnv + "=" + pub, "SSL_CERT_FILE=" + bundle}

	for i := range opts.Nodes {
		n, err := c.newNode(ctx, fmt.Sprintf("node%d", i+1), opts.PluginBinary)
		if err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, n)
	}
	first := c.Nodes[0]
	if err := first.Start(); err != nil {
		return err
	}
	if err := first.waitAPI(ctx, 30*time.Second); err != nil {
		return err
	}
	init, err := first.client("").Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		return fmt.Errorf("initializing %s: %w", first.Name, err)
	}
	c.RootToken, c.unsealKey = init.RootToken, init.KeysB64[0]
	if err := c.Unseal(ctx, first); err != nil {
		return err
	}
	if _, err := c.WaitActive(ctx, 30*time.Second); err != nil {
		return err
	}
	// Autopilot promotes a joined node to voter once it has been healthy
	// this long (10 s by default); until then one lost node loses quorum.
	if _, err := first.client(c.RootToken).Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration", map[string]any{
		"server_stabilization_time": "2s", "cleanup_dead_servers": false,
	}); err != nil {
		return fmt.Errorf("configuring autopilot: %w", err)
	}
	for _, n := range c.Nodes[1:] {
		if err := n.Start(); err != nil {
			return err
		}
		if err := n.waitAPI(ctx, 30*time.Second); err != nil {
			return err
		}
		if _, err := n.client("").Sys().RaftJoinWithContext(ctx, &api.RaftJoinRequest{LeaderAPIAddr: first.Addr}); err != nil {
			return fmt.Errorf("joining %s: %w", n.Name, err)
		}
		if err := c.Unseal(ctx, n); err != nil {
			return err
		}
	}
	if err := c.WaitAllUnsealed(ctx, 60*time.Second); err != nil {
		return err
	}
	if err := c.waitVoters(ctx, 60*time.Second); err != nil {
		return err
	}
	return c.RegisterPlugin(ctx, first.pluginPath(), "")
}

// RegisterPlugin registers (or re-registers) the engine binary at path,
// which every node's plugin directory must hold, under version ("" for
// none); the catalog is replicated, so once is enough.
func (c *Cluster) RegisterPlugin(ctx context.Context, path, version string) error {
	sum, err := fileSHA256(path)
	if err != nil {
		return err
	}
	active, err := c.WaitActive(ctx, 30*time.Second)
	if err != nil {
		return err
	}
	return active.Client(c.RootToken).Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
		Name: "credentials", Type: api.PluginTypeSecrets, Command: filepath.Base(path),
		SHA256: sum, Env: c.env, Version: version,
	})
}

// InstallPlugin copies binary into every node's plugin directory as name.
func (c *Cluster) InstallPlugin(ctx context.Context, binary, name string) (string, error) {
	var path string
	for _, n := range c.Nodes {
		path = filepath.Join(n.dir, "plugins", name)
		if err := installPlugin(ctx, binary, path); err != nil {
			return "", err
		}
	}
	return path, nil
}

func (c *Cluster) newNode(ctx context.Context, name, plugin string) (*Node, error) {
	dir := filepath.Join(c.dir, name)
	for _, d := range []string{"raft", "plugins"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	api, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cluster, err := freeAddr()
	if err != nil {
		return nil, err
	}
	n := &Node{Name: name, Addr: "http://" + api, LogPath: filepath.Join(dir, "vault.log"), dir: dir,
		configPath: filepath.Join(dir, "vault.hcl"), vaultBin: c.vaultBin}
	if err := installPlugin(ctx, plugin, n.pluginPath()); err != nil {
		return nil, err
	}
	// performance_multiplier 1: the tightest Raft timings, so that an
	// election takes seconds, as on production hardware.
	config := fmt.Sprintf(`
storage "raft" {
  path                   = %q
  node_id                = %q
  performance_multiplier = 1
}
listener "tcp" {
  address         = %q
  cluster_address = %q
  tls_disable     = true
}
api_addr         = %q
cluster_addr     = %q
disable_mlock    = true
plugin_directory = %q
log_level        = "info"
`, filepath.Join(dir, "raft"), name, api, cluster, "http://"+api, "https://"+cluster, filepath.Join(dir, "plugins"))
	return n, os.WriteFile(n.configPath, []byte(config), 0o600)
}

func (n *Node) pluginPath() string { return filepath.Join(n.dir, "plugins", PluginBinaryName) }

// Start runs the node's server from its configuration and data; it comes
// up sealed.
func (n *Node) Start() error {
	if n.proc != nil && !n.exited() {
		return fmt.Errorf("%s is running", n.Name)
	}
	logFile, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(n.vaultBin, "server", "-config="+n.configPath)
	cmd.Dir = n.dir
	cmd.Env = append(cleanEnv(os.Environ()), "HOME="+n.dir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", n.Name, err)
	}
	p := &nodeProcess{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	if p.reaper, p.reaperPipe, err = startReaper(cmd.Process.Pid); err != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return err
	}
	n.proc = p
	return nil
}

func (n *Node) exited() bool {
	select {
	case <-n.proc.exited:
		return true
	default:
		return false
	}
}

// Pid is the server's process id (0 when it is not running).
func (n *Node) Pid() int {
	if n.proc == nil || n.exited() {
		return 0
	}
	return n.proc.cmd.Process.Pid
}

// Signal sends sig to the node's process group (the server and the
// plugins it started): SIGKILL a crash, SIGSTOP a VM pause or long stall,
// SIGCONT its end.
func (n *Node) Signal(sig syscall.Signal) error {
	pid := n.Pid()
	if pid == 0 {
		return fmt.Errorf("%s is not running", n.Name)
	}
	return syscall.Kill(-pid, sig)
}

// Kill ends the node at once, plugins included, and waits for it.
func (n *Node) Kill() {
	if n.Pid() == 0 {
		return
	}
	_ = n.Signal(syscall.SIGKILL)
	<-n.proc.exited
	n.stopReaper()
}

// Stop ends the node gracefully (SIGTERM), then by force after 20 s.
func (n *Node) Stop() {
	if n.Pid() == 0 {
		n.stopReaper()
		return
	}
	pid := n.proc.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGCONT) // a paused node cannot stop
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-n.proc.exited:
	case <-time.After(20 * time.Second):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-n.proc.exited
	n.stopReaper()
}

func (n *Node) stopReaper() {
	if n.proc != nil && n.proc.reaper != nil {
		_ = n.proc.reaper.Process.Kill()
		_ = n.proc.reaper.Wait()
		n.proc.reaperPipe.Close()
		n.proc.reaper = nil
	}
}

// PluginPids are the engine processes the node runs now.
func (n *Node) PluginPids() []int {
	pid := n.Pid()
	if pid == 0 {
		return nil
	}
	return childrenOf(pid, PluginBinaryName)
}

// childrenOf lists the processes whose parent is ppid and whose command
// name starts like name (the kernel keeps 15 characters).
func childrenOf(ppid int, name string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		comm := s[open+1 : closing]
		fields := strings.Fields(s[closing+1:])
		if len(fields) < 2 {
			continue
		}
		if parent, _ := strconv.Atoi(fields[1]); parent == ppid && strings.HasPrefix(name, comm) {
			out = append(out, pid)
		}
	}
	return out
}

// Client is an API client for this node holding token.
func (n *Node) Client(token string) *api.Client { return n.client(token) }

func (n *Node) client(token string) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = n.Addr
	cfg.MaxRetries = 0
	cfg.Timeout = 10 * time.Second
	c, err := api.NewClient(cfg)
	if err != nil {
		panic(fmt.Sprintf("vault client: %v", err))
	}
	c.SetToken(token)
	return c
}

// waitAPI waits until the node answers sys/health at all (sealed or not).
func (n *Node) waitAPI(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	hc := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if n.exited() {
			return fmt.Errorf("%s exited; its log:\n%s", n.Name, tail(n.LogPath, 20))
		}
		if resp, err := hc.Get(n.Addr + "/v1/sys/health"); err == nil {
			resp.Body.Close()
			return nil
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("%s not answering after %s; its log:\n%s", n.Name, limit, tail(n.LogPath, 20))
}

// Unseal unseals n with the cluster's key.
func (c *Cluster) Unseal(ctx context.Context, n *Node) error {
	if err := n.waitAPI(ctx, 30*time.Second); err != nil {
		return err
	}
	if _, err := n.client("").Sys().UnsealWithContext(ctx, c.unsealKey); err != nil {
		return fmt.Errorf("unsealing %s: %w", n.Name, err)
	}
	return nil
}

// Restart starts a stopped or killed node from its data and unseals it.
func (c *Cluster) Restart(ctx context.Context, n *Node) error {
	if err := n.Start(); err != nil {
		return err
	}
	return c.Unseal(ctx, n)
}

// Active is the node that is active now, per the nodes that answer.
func (c *Cluster) Active(ctx context.Context) (*Node, error) {
	for _, n := range c.Nodes {
		if n.Pid() == 0 {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		l, err := n.client("").Sys().LeaderWithContext(hctx)
		cancel()
		if err != nil || !l.HAEnabled || l.LeaderAddress == "" {
			continue
		}
		for _, m := range c.Nodes {
			if m.Addr == l.LeaderAddress && m.Pid() != 0 {
				return m, nil
			}
		}
	}
	return nil, errors.New("no active node")
}

// WaitActive waits until a node is active and answers as such.
func (c *Cluster) WaitActive(ctx context.Context, limit time.Duration) (*Node, error) {
	deadline := time.Now().Add(limit)
	hc := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		if n, err := c.Active(ctx); err == nil {
			// sys/health answers 200 only on the active, unsealed node.
			if resp, err := hc.Get(n.Addr + "/v1/sys/health"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return n, nil
				}
			}
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("no active node after %s", limit)
}

// WaitAllUnsealed waits until every running node is unsealed: the active
// one answering 200 and the standbys 429.
func (c *Cluster) WaitAllUnsealed(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	hc := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		ready := 0
		for _, n := range c.Nodes {
			if n.Pid() == 0 {
				ready++
				continue
			}
			if resp, err := hc.Get(n.Addr + "/v1/sys/health"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusTooManyRequests {
					ready++
				}
			}
		}
		if ready == len(c.Nodes) {
			return nil
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("not every node unsealed after %s", limit)
}

// waitVoters waits until every node votes in Raft, so that the cluster
// survives the loss of any one.
func (c *Cluster) waitVoters(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if active, err := c.Active(ctx); err == nil {
			sec, err := active.client(c.RootToken).Logical().ReadWithContext(ctx, "sys/storage/raft/configuration")
			if err == nil && sec != nil {
				cfg, _ := sec.Data["config"].(map[string]any)
				servers, _ := cfg["servers"].([]any)
				voters := 0
				for _, s := range servers {
					if m, _ := s.(map[string]any); m["voter"] == true {
						voters++
					}
				}
				if voters == len(c.Nodes) {
					return nil
				}
			}
		}
		if !sleep(ctx, 250*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("not every node a voter after %s", limit)
}

// Stop stops every node and removes the cluster's data, unless a plugin
// reported a data race (the logs are kept then).
func (c *Cluster) Stop() error {
	races := 0
	for _, n := range c.Nodes {
		n.Stop()
		races += countRaces(n.LogPath)
	}
	if races > 0 {
		return fmt.Errorf("the plugin reported %d data race(s); see the logs under %s", races, c.dir)
	}
	return os.RemoveAll(c.dir)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
