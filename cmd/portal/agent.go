package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clankteam/credentials/portal/provision"
)

// agentCommand runs `portal agent create|delete|list` with VAULT_TOKEN: a
// token holding the org's agents policy, or an operator's; and `portal
// agent token`, which needs only the agent's own login.
func agentCommand(ctx context.Context, verb string, args []string, stdout io.Writer) error {
	if verb == "token" {
		return agentToken(ctx, args, stdout)
	}
	fs := flag.NewFlagSet("agent "+verb, flag.ContinueOnError)
	org := fs.String("org", "", "the agent's org")
	var creds, methods listFlag
	var paths, tools, denyTools repeatFlag
	ttl := fs.Duration("ttl", provision.DefaultAgentTokenTTL, "life of the agent's Vault tokens")
	loginFile := ""
	if verb == "create" {
		fs.StringVar(&loginFile, "login-file", "", "also write the agent's login (role_id, secret_id) to this file, readable by its owner only, for portal agent token -login-file")
	}
	maxTTL := fs.Duration("max-ttl", 0, "how long renewals may extend a token (default: -ttl, no renewal)")
	if verb == "create" {
		fs.Var(&creds, "cred", "credential the agent may use (repeat, or comma-separated)")
		fs.Var(&methods, "method", "only this HTTP method (repeat for more; default any)")
		fs.Var(&paths, "path", "only this path, matched segment by segment: /v1/balance, '/v1/charges/*' (below), '/v1/+/x' (one segment); the query is never matched (repeat for more; default any)")
		fs.Var(&tools, "tool", "only this tool of a remote MCP server (mcp_url), or * for all; alone, no HTTP calls (repeat for more; default any)")
		fs.Var(&denyTools, "deny-tool", "never this remote MCP tool, whatever else allows it (repeat for more)")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *org == "" || (verb != "list" && fs.NArg() != 1) || (verb == "list" && fs.NArg() != 0) {
		return fmt.Errorf("usage: portal agent %s -org <org>%s", verb, map[string]string{
			"create": " -cred <name>[,<name>...] [-method M]... [-path GLOB]... [-tool T]... [-deny-tool T]... [-ttl 15m] <agent>",
			"delete": " <agent>", "list": "",
		}[verb])
	}
	c, err := operatorClient()
	if err != nil {
		return err
	}
	switch verb {
	case "create":
		login, err := provision.CreateAgent(ctx, c, *org, provision.AgentSpec{
			Name: fs.Arg(0), Creds: creds, Methods: methods, Paths: paths,
			Tools: tools, DenyTools: denyTools, TokenTTL: *ttl, TokenMaxTTL: *maxTTL,
		})
		if err != nil {
			return err
		}
		if loginFile != "" {
			if err := writeLoginFile(loginFile, login); err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, `agent %s of org %s created. Its login is shown only now:

  role_id    %s
  secret_id  %s

The agent logs in with
  vault write auth/approle/login role_id=<role_id> secret_id=<secret_id>
and calls the broker with the token it gets (valid %s):
  curl -H "Authorization: Bearer <token>" <portal>/broker/%s/<credential>/<path>
or points an MCP client at <portal>/mcp/%s with that token; portal agent token
prints a fresh one for clients that run a header helper.
`, fs.Arg(0), *org, login.RoleID, login.SecretID, *ttl, *org, *org)
		return nil
	case "delete":
		if err := provision.DeleteAgent(ctx, c, *org, fs.Arg(0)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "agent %s of org %s deleted; its tokens no longer work\n", fs.Arg(0), *org)
		return nil
	case "list":
		agents, err := provision.ListAgents(ctx, c, *org)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "AGENT\tCREDENTIALS\tMETHODS\tPATHS\tTOOLS\tTOKEN TTL")
		for _, a := range agents {
			tools := orAny(a.Tools)
			if len(a.DenyTools) > 0 {
				tools += " but " + strings.Join(a.DenyTools, ",")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, strings.Join(a.Creds, ","),
				orAny(a.Methods), orAny(a.Paths), tools, a.TokenTTL.Round(time.Second))
		}
		return tw.Flush()
	}
	return usageError("usage: portal agent create|delete|list -org <org> ...")
}

func orAny(vs []string) string {
	if len(vs) == 0 {
		return "any"
	}
	return strings.Join(vs, ",")
}

// repeatFlag collects a repeatable flag whose values may hold commas.
type repeatFlag []string

func (r *repeatFlag) String() string { return strings.Join(*r, " ") }

func (r *repeatFlag) Set(v string) error {
	*r = append(*r, v)
	return nil
}

// listFlag collects a repeatable, comma-separable flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}
