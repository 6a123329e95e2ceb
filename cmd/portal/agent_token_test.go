package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clankteam/credentials/portal/provision"
	"github.com/clankteam/credentials/testing/harness"
)

// TestAgentTokenCommand: portal agent create -login-file keeps the login,
// and portal agent token prints a fresh token of that agent (bare, or as
// the headers a header helper answers), from the file or the environment.
func TestAgentTokenCommand(t *testing.T) {
	v := harness.StartT(t)
	ctx := context.Background()
	for _, org := range []string{"tok", "tok-b"} {
		if err := v.CreateOrg(ctx, org); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("VAULT_ADDR", v.Addr)
	t.Setenv("VAULT_TOKEN", v.RootToken)
	dir := t.TempDir()
	loginFile := filepath.Join(dir, "assistant.json")

	var out bytes.Buffer
	if err := run(ctx, []string{"agent", "create", "-org", "tok", "-cred", "key-a", "-login-file", loginFile, "assistant"}, nil, &out); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(loginFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("login file: %v %v", err, st)
	}
	if err := run(ctx, []string{"agent", "create", "-org", "tok", "-cred", "key-a", "-login-file", loginFile, "again"}, nil, &out); err == nil {
		t.Error("create overwrote an existing login file")
	}

	// No operator token is needed, or used.
	t.Setenv("VAULT_TOKEN", "")
	out.Reset()
	if err := run(ctx, []string{"agent", "token", "-org", "tok", "-login-file", loginFile, "assistant"}, nil, &out); err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(out.String())
	self, err := v.ClientWithToken(token).Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		t.Fatalf("the printed token does not work: %v", err)
	}
	if meta, _ := self.Data["meta"].(map[string]interface{}); meta["role_name"] != provision.AgentName("tok", "assistant") {
		t.Errorf("the token is role %v's", meta["role_name"])
	}

	out.Reset()
	if err := run(ctx, []string{"agent", "token", "-org", "tok", "-login-file", loginFile, "-format", "headers", "assistant"}, nil, &out); err != nil {
		t.Fatal(err)
	}
	var headers map[string]string
	if err := json.Unmarshal(out.Bytes(), &headers); err != nil || !strings.HasPrefix(headers["Authorization"], "Bearer hvs.") || len(headers) != 1 {
		t.Fatalf("headers: %s", out.String())
	}

	// The login of one agent is not taken for another's.
	if err := run(ctx, []string{"agent", "token", "-org", "tok-b", "-login-file", loginFile, "assistant"}, nil, &out); err == nil || !strings.Contains(err.Error(), "not agent assistant of org tok-b") {
		t.Errorf("another org's agent: %v", err)
	}
	var login provision.AgentLogin
	raw, _ := os.ReadFile(loginFile)
	_ = json.Unmarshal(raw, &login)
	t.Setenv(roleIDEnv, login.RoleID)
	t.Setenv(secretIDEnv, login.SecretID)
	out.Reset()
	if err := run(ctx, []string{"agent", "token", "-org", "tok", "assistant"}, nil, &out); err != nil || !strings.HasPrefix(out.String(), "hvs.") {
		t.Fatalf("from the environment: %v %q", err, out.String())
	}
	t.Setenv(secretIDEnv, "wrong")
	if err := run(ctx, []string{"agent", "token", "-org", "tok", "assistant"}, nil, &out); err == nil {
		t.Error("a wrong secret_id gave a token")
	}
}
