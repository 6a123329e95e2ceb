// Package harness starts a real HashiCorp Vault dev server with the
// credentials engine registered, for integration tests and `make run`.
//
// The Vault binary is built from HashiCorp's Go module by `make vault`
// (testing/vault); the plugin binary is the product's own, registered by its
// SHA-256 exactly as an operator would. Every process started here is stopped
// by Stop, and dies with the test binary if that is killed.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/tlsca"
)

// PluginBinaryName is the engine's executable name in the plugin directory.
const PluginBinaryName = "vault-plugin-secrets-credentials"

// Options say which binaries to run. Zero values pick the defaults.
type Options struct {
	// VaultBinary defaults to $VAULT_BIN, then <repo>/bin/vault.
	VaultBinary string
	// PluginBinary defaults to $CREDENTIALS_PLUGIN_BIN, then a fresh build of
	// cmd/vault-plugin-secrets-credentials.
	PluginBinary string
	// Dir holds the plugin directory and the server log; default a new
	// temporary directory removed by Stop.
	Dir string
	// ListenAddr is the address to serve on; default a free 127.0.0.1 port.
	ListenAddr string
	// PluginEnv is the operator's environment for the engine, given at
	// registration (vault plugin register -env). Default: the loopback
	// range as private targets (the tests' local services), a fresh
	// edge key, whose private half is Vault.EdgeKey, and SSL_CERT_FILE
	// with the system's roots and Vault.CA.
	PluginEnv []string
	// Config is extra server configuration (HCL) for the dev server, e.g.
	// default_max_request_duration = "5s".
	Config string
}

// TestPrivateTargets is what the harness lets the engine reach although it
// is not public: the loopback range, where tests run their services, and
// the name localhost, which the MCP conformance suite's servers are called.
const TestPrivateTargets = "127.0.0.0/8,localhost"

// Vault is a running dev server with the engine registered.
type Vault struct {
	// Addr is the server's http:// address.
	Addr string
	// RootToken is the dev server's root token.
	RootToken string
	// LogPath is the file that holds the server's (and the plugin's) output.
	LogPath string
	// EdgeKey is the portal's edge key (PORTAL_EDGE_KEY) that matches the
	// public key the engine was registered with; empty when PluginEnv was
	// given.
	EdgeKey string
	// CA is the test CA the engine trusts (through SSL_CERT_FILE), for
	// test servers' certificates; nil when PluginEnv was given.
	CA *tlsca.CA

	cmd        *exec.Cmd
	reaper     *exec.Cmd
	reaperPipe *os.File
	dir        string
	removeDir  bool
	exited     chan struct{}
	stopOnce   sync.Once
	stopResult error
}

// Start runs `vault server -dev` with the engine in its plugin directory and
// registers the engine as "credentials". The caller must call Stop.
func Start(ctx context.Context, opts Options) (*Vault, error) {
	vaultBin, err := vaultBinary(opts.VaultBinary)
	if err != nil {
		return nil, err
	}
	dir, removeDir := opts.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "credentials-vault-"); err != nil {
			return nil, err
		}
		removeDir = true
	}
	pluginDir := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		return nil, err
	}
	pluginPath := filepath.Join(pluginDir, PluginBinaryName)
	if err := installPlugin(ctx, opts.PluginBinary, pluginPath); err != nil {
		return nil, err
	}

	env, edgeKey := opts.PluginEnv, ""
	var ca *tlsca.CA
	if env == nil {
		priv, pub, err := egress.GenerateEdgeKey()
		if err != nil {
			return nil, err
		}
		edgeKey = priv
		// A test CA the engine trusts beside the system's roots, so test
		// servers (SMTP) speak verified TLS.
		if ca, err = tlsca.New(); err != nil {
			return nil, err
		}
		bundle := filepath.Join(dir, "ca-bundle.pem")
		if err := ca.WriteBundle(bundle); err != nil {
			return nil, err
		}
		env = []string{egress.PrivateTargetsEnv + "=" + TestPrivateTargets, egress.EdgeKeysEnv + "=" + pub, "SSL_CERT_FILE=" + bundle}
	}
	configPath := ""
	if opts.Config != "" {
		configPath = filepath.Join(dir, "extra.hcl")
		if err := os.WriteFile(configPath, []byte(opts.Config), 0o600); err != nil {
			return nil, err
		}
	}

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		v, err := startServer(ctx, vaultBin, dir, pluginDir, opts.ListenAddr, configPath)
		if err == nil {
			v.removeDir = removeDir
			v.EdgeKey = edgeKey
			v.CA = ca
			if err = v.registerPlugin(ctx, pluginPath, env); err == nil {
				return v, nil
			}
			_ = v.Stop()
			return nil, err
		}
		lastErr = err
		if opts.ListenAddr != "" {
			break // a fixed address will not become free by retrying
		}
	}
	if removeDir {
		_ = os.RemoveAll(dir)
	}
	return nil, lastErr
}

// StartT starts a server for one test and stops it when the test ends.
func StartT(tb testing.TB) *Vault {
	tb.Helper()
	v, err := Start(context.Background(), Options{})
	if err != nil {
		tb.Fatalf("starting vault: %v", err)
	}
	tb.Cleanup(func() {
		if err := v.Stop(); err != nil {
			tb.Errorf("stopping vault: %v", err)
		}
	})
	return v
}

func startServer(ctx context.Context, vaultBin, dir, pluginDir, listenAddr, configPath string) (*Vault, error) {
	if listenAddr == "" {
		var err error
		if listenAddr, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	rootToken := "root-" + randomHex(12)
	logPath := filepath.Join(dir, "vault.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	args := []string{"server", "-dev",
		"-dev-root-token-id=" + rootToken,
		"-dev-listen-address=" + listenAddr,
		"-dev-plugin-dir=" + pluginDir,
		"-dev-no-store-token",
		"-log-level=info",
	}
	if configPath != "" {
		args = append(args, "-config="+configPath)
	}
	cmd := exec.Command(vaultBin, args...)
	cmd.Dir = dir
	// The server must not pick up the caller's Vault settings, and must not
	// write into the caller's home directory.
	cmd.Env = append(cleanEnv(os.Environ()), "HOME="+dir)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // Stop signals the whole group, plugins included
		Pdeathsig: syscall.SIGKILL, // and a killed test binary takes Vault with it
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", vaultBin, err)
	}
	v := &Vault{
		Addr:      "http://" + listenAddr,
		RootToken: rootToken,
		LogPath:   logPath,
		cmd:       cmd,
		dir:       dir,
		exited:    make(chan struct{}),
	}
	go func() { _ = cmd.Wait(); close(v.exited) }()
	if v.reaper, v.reaperPipe, err = startReaper(cmd.Process.Pid); err != nil {
		_ = v.Stop()
		return nil, err
	}

	if err := v.waitReady(ctx, 30*time.Second); err != nil {
		_ = v.Stop()
		return nil, err
	}
	return v, nil
}

func (v *Vault) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-v.exited:
			return fmt.Errorf("vault exited during start; its log:\n%s", tail(v.LogPath, 20))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := client.Get(v.Addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("vault not ready after %s; its log:\n%s", limit, tail(v.LogPath, 20))
}

func (v *Vault) registerPlugin(ctx context.Context, pluginPath string, env []string) error {
	sum, err := fileSHA256(pluginPath)
	if err != nil {
		return err
	}
	err = v.Client().Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
		Name:    provision.PluginName,
		Type:    api.PluginTypeSecrets,
		Command: filepath.Base(pluginPath),
		SHA256:  sum,
		Env:     env,
	})
	if err != nil {
		return fmt.Errorf("registering plugin: %w", err)
	}
	return nil
}

// Client returns a new API client for the server holding the root token.
func (v *Vault) Client() *api.Client {
	return v.ClientWithToken(v.RootToken)
}

// ClientWithToken returns a new API client for the server holding token.
func (v *Vault) ClientWithToken(token string) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		// NewClient fails only on a malformed environment or address, both
		// fixed here.
		panic(fmt.Sprintf("vault client: %v", err))
	}
	c.SetToken(token)
	return c
}

// CreateOrg provisions org as CreateTestOrg does.
func (v *Vault) CreateOrg(ctx context.Context, org string) error {
	return CreateTestOrg(ctx, v.Client(), org)
}

// CreateTestOrg provisions org exactly as the operator command does, then
// turns its health checks off: the catalog's presets verify against the
// real providers, which tests never call. A test of the checks turns them
// on for its org.
func CreateTestOrg(ctx context.Context, c *api.Client, org string) error {
	if err := provision.CreateOrg(ctx, c, org); err != nil {
		return err
	}
	_, err := c.Logical().WriteWithContext(ctx, "orgs/"+org+"/config", map[string]interface{}{"health_check_interval": 0})
	return err
}

// Token creates a token holding only the given policies, as a person or
// agent of an org would hold.
func (v *Vault) Token(ctx context.Context, ttl time.Duration, policies ...string) (string, error) {
	secret, err := v.Client().Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{
		Policies:        policies,
		NoDefaultPolicy: false,
		TTL:             ttl.String(),
	})
	if err != nil {
		return "", fmt.Errorf("creating token: %w", err)
	}
	return secret.Auth.ClientToken, nil
}

// Stop ends the server and its plugin processes, and reports data races the
// plugin logged (the test build of the plugin runs with the race detector).
func (v *Vault) Stop() error {
	v.stopOnce.Do(func() {
		if v.reaper != nil {
			_ = v.reaper.Process.Kill()
			_ = v.reaper.Wait()
			v.reaperPipe.Close()
		}
		pgid := v.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-v.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-v.exited
		}
		// Plugins that outlived the server would still be in its group.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		if races := countRaces(v.LogPath); races > 0 {
			v.stopResult = fmt.Errorf("the plugin reported %d data race(s); see %s", races, v.LogPath)
			return // keep the directory so the log can be read
		}
		if v.removeDir {
			_ = os.RemoveAll(v.dir)
		}
	})
	return v.stopResult
}

// startReaper starts a small process that kills the server's process group
// if this process dies without calling Stop (a panicking or killed test
// binary). Pdeathsig alone takes only Vault with it, not the plugin
// processes Vault started. The reaper waits for its standard input, a pipe
// whose other end only this process holds, to close.
func startReaper(pgid int) (*exec.Cmd, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", `read _ ; kill -9 -"$1" 2>/dev/null`, "reaper", strconv.Itoa(pgid))
	cmd.Stdin = r
	// Its own group, so that stopping the server's group does not end it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("starting the reaper: %w", err)
	}
	return cmd, w, nil
}

// ReadLog returns everything the server and plugin have logged so far.
func (v *Vault) ReadLog() ([]byte, error) {
	return os.ReadFile(v.LogPath)
}

func countRaces(logPath string) int {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("WARNING: DATA RACE"))
}

func installPlugin(ctx context.Context, src, dst string) error {
	if src == "" {
		src = os.Getenv("CREDENTIALS_PLUGIN_BIN")
	}
	if src == "" {
		return buildPlugin(ctx, dst)
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("plugin binary: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// buildPlugin compiles the engine with the race detector, so integration
// tests also catch races inside the plugin process.
func buildPlugin(ctx context.Context, dst string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-race", "-o", dst, "./cmd/"+PluginBinaryName)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("building plugin: %w\n%s", err, out)
	}
	return nil
}

// RepoRoot finds the product's module root from the working directory.
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the credentials module")
	}
	return filepath.Dir(gomod), nil
}

func vaultBinary(explicit string) (string, error) {
	if explicit == "" {
		explicit = os.Getenv("VAULT_BIN")
	}
	if explicit == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		explicit = filepath.Join(root, "bin", "vault")
	}
	if _, err := os.Stat(explicit); err != nil {
		return "", fmt.Errorf("vault binary %s not found: run `make vault` first", explicit)
	}
	return explicit, nil
}

// cleanEnv drops VAULT_* variables so that the dev server ignores the
// caller's Vault.
func cleanEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "VAULT_") {
			out = append(out, kv)
		}
	}
	return out
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// PortalEdgeKey is EdgeKey parsed, for a portal.Config; nil when the
// harness did not make the key.
func (v *Vault) PortalEdgeKey() *egress.EdgePrivateKey {
	if v.EdgeKey == "" {
		return nil
	}
	k, err := egress.ParseEdgePrivateKey(v.EdgeKey)
	if err != nil {
		// The harness made the key itself a moment ago.
		panic(fmt.Sprintf("harness edge key: %v", err))
	}
	return k
}

// Pid is the Vault server's process id, for measurements.
func (v *Vault) Pid() int { return v.cmd.Process.Pid }
