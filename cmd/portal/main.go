// Command portal serves the credentials web portal and broker, and carries
// the operator commands that provision orgs in Vault.
//
//	portal serve [-addr 127.0.0.1:8080] [-public-url URL]
//	                                             serve the portal (VAULT_ADDR names Vault;
//	                                             PORTAL_SESSION_KEY, base64 of 32 bytes, seals sessions)
//	portal session-key                           print a new random session key
//	portal edge-key                              print a new edge key pair (PORTAL_EDGE_KEY for the portal,
//	                                             CREDENTIALS_EDGE_KEYS for the plugin's registration)
//	portal org create <org>                      provision an org (needs an operator VAULT_TOKEN)
//	portal person create -org <org> [-role admin|member|agents] <username>
//	                                             add a userpass login; the password is read from stdin
//	portal agent create -org <org> -cred <name>[,<name>...] [-method GET] [-path '/v1/*'] [-ttl 15m] <agent>
//	portal agent delete -org <org> <agent>        remove an agent and end its tokens
//	portal agent list -org <org>
//	portal proxy-ca -org <org> [-dir DIR] [-replace]
//	                                             make the org's CA for the forward proxy (-proxy-addr)
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/cmd/internal/hardening"
	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
)

const usage = `usage:
  portal serve [-addr 127.0.0.1:8080] [-public-url https://portal.example.com] [-trusted-proxies 10.0.0.0/8]
               [-proxy-addr 127.0.0.1:8081]
  portal proxy-ca -org <org> [-dir DIR] [-replace]
  portal session-key
  portal edge-key
  portal org create <org>
  portal person create -org <org> [-role admin|member|agents] <username>   (password on stdin)
  portal agent create -org <org> -cred <name>[,<name>...] [-method M]... [-path /v1/x/*]... [-ttl 15m] [-login-file agent.json] <agent>
  portal agent delete -org <org> <agent>
  portal agent list -org <org>
  portal agent token -org <org> [-login-file agent.json] [-format token|headers] <agent>

Vault is found through VAULT_ADDR; operator commands use VAULT_TOKEN.
PORTAL_SESSION_KEY (base64 of 32 random bytes, from "portal session-key") seals
session cookies; every instance behind one load balancer needs the same key.
PORTAL_SESSION_KEYS rotates them: comma-separated keys (each optionally
<id>:<key>), newest first; the newest seals, all open.
PORTAL_EDGE_KEY (from "portal edge-key") opens the injections the engine seals
for the broker; register the plugin with the printed CREDENTIALS_EDGE_KEYS.
-proxy-addr serves the forward proxy (HTTPS_PROXY=http://<org>:<token>@host:port)
with the orgs' CAs in PORTAL_PROXY_CA_DIR, made by "portal proxy-ca".`

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "portal:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	hardening.DisableCoreDumps()
	if len(args) == 0 {
		return usageError(usage)
	}
	switch {
	case args[0] == "serve":
		return serve(ctx, args[1:])
	case args[0] == "session-key":
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(key))
		return nil
	case args[0] == "edge-key":
		priv, pub, err := egress.GenerateEdgeKey()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s=%s\n%s=%s\n", egress.EdgeKeyEnv, priv, egress.EdgeKeysEnv, pub)
		return nil
	case len(args) >= 2 && args[0] == "org" && args[1] == "create":
		return orgCreate(ctx, args[2:], stdout)
	case len(args) >= 2 && args[0] == "person" && args[1] == "create":
		return personCreate(ctx, args[2:], stdin, stdout)
	case args[0] == "proxy-ca":
		return proxyCA(args[1:], stdout)
	case len(args) >= 2 && args[0] == "agent":
		return agentCommand(ctx, args[1], args[2:], stdout)
	}
	return fmt.Errorf("unknown command %q\n%s", strings.Join(args, " "), usage)
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	publicURL := fs.String("public-url", "", "where people reach the portal, e.g. https://portal.example.com (default: http:// and the listen address)")
	proxyAddr := fs.String("proxy-addr", "", "where the forward proxy listens (HTTPS_PROXY for agents' programs), e.g. 127.0.0.1:8081; its CAs are in PORTAL_PROXY_CA_DIR")
	trusted := fs.String("trusted-proxies", "", "comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client address (for sign-in limits)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	vaultAddr := os.Getenv("VAULT_ADDR")
	if vaultAddr == "" {
		return errors.New("VAULT_ADDR must name the Vault server")
	}
	sessionKeys, err := sessionKeysFromEnv()
	if err != nil {
		return err
	}
	var trustedProxies []netip.Prefix
	for _, item := range strings.Split(*trusted, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return fmt.Errorf("-trusted-proxies: %q is not a CIDR", item)
		}
		trustedProxies = append(trustedProxies, p)
	}
	var edgeKey *egress.EdgePrivateKey
	if raw := os.Getenv(egress.EdgeKeyEnv); raw != "" {
		var err error
		if edgeKey, err = egress.ParseEdgePrivateKey(raw); err != nil {
			return err
		}
	} else {
		slog.Warn("no " + egress.EdgeKeyEnv + ": the broker edge refuses every call until the operator sets it")
	}
	srv, err := portal.NewServer(portal.Config{
		Addr:           *addr,
		VaultAddr:      vaultAddr,
		PublicURL:      *publicURL,
		SessionKeys:    sessionKeys,
		TrustedProxies: trustedProxies,
		EdgeKey:        edgeKey,
		PrivateTargets: os.Getenv(egress.PrivateTargetsEnv),
		ProxyAddr:      *proxyAddr,
		ProxyCADir:     os.Getenv("PORTAL_PROXY_CA_DIR"),
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	slog.Info("portal listening", "url", srv.URL(), "proxy", srv.ProxyURL(), "vault", vaultAddr)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// sessionKeysFromEnv reads PORTAL_SESSION_KEYS, comma-separated keys
// (each base64 of 32 bytes, optionally "<id>:" before it), newest first:
// the newest seals, all open. PORTAL_SESSION_KEY is the one-key form.
func sessionKeysFromEnv() ([]portal.SessionKey, error) {
	list := os.Getenv("PORTAL_SESSION_KEYS")
	if list == "" {
		list = os.Getenv("PORTAL_SESSION_KEY")
	}
	var keys []portal.SessionKey
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, b64, found := strings.Cut(item, ":")
		if !found {
			id, b64 = "", item
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(key) != 32 {
			return nil, errors.New("PORTAL_SESSION_KEYS: each key must be base64 of 32 bytes, optionally as <id>:<key> (make one with `portal session-key`)")
		}
		keys = append(keys, portal.SessionKey{ID: id, Key: key})
	}
	return keys, nil
}

func operatorClient() (*api.Client, error) {
	c, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		return nil, err
	}
	if c.Token() == "" {
		return nil, errors.New("VAULT_TOKEN must hold an operator token")
	}
	return c, nil
}

func orgCreate(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: portal org create <org>")
	}
	c, err := operatorClient()
	if err != nil {
		return err
	}
	org := args[0]
	if err := provision.CreateOrg(ctx, c, org); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "org %s ready: mount %s/, policies %s, %s and %s (agent managers: trusted people only)\n",
		org, contract.Mount(org), provision.AdminPolicy(org), provision.MemberPolicy(org), provision.AgentsPolicy(org))
	return nil
}

func personCreate(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("person create", flag.ContinueOnError)
	org := fs.String("org", "", "the person's org")
	role := fs.String("role", string(provision.RoleMember), "admin, member or agents (manages agents; trusted people only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *org == "" {
		return errors.New("usage: portal person create -org <org> [-role admin|member|agents] <username>")
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading password: %w", err)
	}
	password := strings.TrimRight(line, "\r\n")
	c, err := operatorClient()
	if err != nil {
		return err
	}
	if err := provision.CreatePerson(ctx, c, *org, fs.Arg(0), password, provision.Role(*role)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "person %s can sign in to org %s as %s\n", fs.Arg(0), *org, *role)
	return nil
}

// usageError is a command's usage text, which is printed as it is written
// (several lines, ending in a newline) rather than as an error message.
type usageError string

func (u usageError) Error() string { return string(u) }

// proxyCA makes an org's CA for the forward proxy in the directory the
// portal reads (-dir, default PORTAL_PROXY_CA_DIR) and prints the
// certificate's path: agents' programs trust that file.
func proxyCA(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("proxy-ca", flag.ContinueOnError)
	org := fs.String("org", "", "the org")
	dir := fs.String("dir", os.Getenv("PORTAL_PROXY_CA_DIR"), "the directory of the orgs' proxy CAs (PORTAL_PROXY_CA_DIR)")
	replace := fs.Bool("replace", false, "replace an existing CA (agents must trust the new one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *org == "" || *dir == "" {
		return usageError("usage: portal proxy-ca -org <org> [-dir DIR] [-replace] (DIR defaults to PORTAL_PROXY_CA_DIR)")
	}
	path, err := portal.CreateProxyCA(*dir, *org, *replace)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\nAgents' programs trust it: SSL_CERT_FILE, CURL_CA_BUNDLE, GIT_SSL_CAINFO, NODE_EXTRA_CA_CERTS or REQUESTS_CA_BUNDLE=%s\n", path, path)
	return nil
}
