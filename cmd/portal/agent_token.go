package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/portal/provision"
)

// Agent login from the environment or a file.
const (
	roleIDEnv   = "AGENT_ROLE_ID"
	secretIDEnv = "AGENT_SECRET_ID"
)

// agentToken runs `portal agent token`: it logs the agent in with its
// AppRole login and prints a fresh Vault token, for MCP clients that run a
// command to get their headers (Claude Code's headersHelper) or read a
// token from the environment.
func agentToken(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("agent token", flag.ContinueOnError)
	org := fs.String("org", "", "the agent's org")
	loginFile := fs.String("login-file", "", "a JSON file with role_id and secret_id (from portal agent create -login-file); default $"+roleIDEnv+" and $"+secretIDEnv)
	format := fs.String("format", "token", "token (the bare token) or headers (a JSON object of HTTP headers, for a header helper)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *org == "" || fs.NArg() != 1 || (*format != "token" && *format != "headers") {
		return errors.New("usage: portal agent token -org <org> [-login-file agent.json] [-format token|headers] <agent>")
	}
	agent := fs.Arg(0)
	login, err := readAgentLogin(*loginFile)
	if err != nil {
		return err
	}
	c, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		return err
	}
	// The login is the credential here; no other token is sent.
	c.ClearToken()
	s, err := c.Logical().WriteWithContext(ctx, "auth/approle/login", map[string]interface{}{
		"role_id": login.RoleID, "secret_id": login.SecretID,
	})
	if err != nil {
		return fmt.Errorf("logging in as agent %s: %w", agent, err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return errors.New("logging in: Vault answered without a token")
	}
	// The login must be this agent's: a header helper that quietly signs
	// in as another agent would give a client the wrong tools.
	if want, got := provision.AgentName(*org, agent), s.Auth.Metadata["role_name"]; got != want {
		return fmt.Errorf("this login is role %q's, not agent %s of org %s (%s)", got, agent, *org, want)
	}
	if *format == "headers" {
		return json.NewEncoder(stdout).Encode(map[string]string{"Authorization": "Bearer " + s.Auth.ClientToken})
	}
	_, err = fmt.Fprintln(stdout, s.Auth.ClientToken)
	return err
}

func readAgentLogin(path string) (*provision.AgentLogin, error) {
	login := &provision.AgentLogin{}
	if path == "" {
		login.RoleID, login.SecretID = os.Getenv(roleIDEnv), os.Getenv(secretIDEnv)
		if login.RoleID == "" || login.SecretID == "" {
			return nil, fmt.Errorf("set %s and %s, or give -login-file", roleIDEnv, secretIDEnv)
		}
		return login, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the login file: %w", err)
	}
	if err := json.Unmarshal(raw, login); err != nil || login.RoleID == "" || login.SecretID == "" {
		return nil, fmt.Errorf(`%s must be JSON with role_id and secret_id ({"role_id": "...", "secret_id": "..."})`, path)
	}
	login.RoleID, login.SecretID = strings.TrimSpace(login.RoleID), strings.TrimSpace(login.SecretID)
	return login, nil
}

// writeLoginFile keeps an agent's login for portal agent token, readable by
// its owner only; an existing file is not overwritten.
func writeLoginFile(path string, login *provision.AgentLogin) error {
	raw, err := json.MarshalIndent(map[string]string{"role_id": login.RoleID, "secret_id": login.SecretID}, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing the login file: %w", err)
	}
	if _, err := f.Write(append(raw, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
