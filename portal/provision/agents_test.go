package provision

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl"
)

func TestAgentSpecValidation(t *testing.T) {
	ok := AgentSpec{Name: "billing", Creds: []string{"stripe-live"}}
	for _, tc := range []struct {
		desc string
		org  string
		edit func(*AgentSpec)
	}{
		{"bad org", "Acme", func(*AgentSpec) {}},
		{"no name", "acme", func(s *AgentSpec) { s.Name = "" }},
		{"upper-case name", "acme", func(s *AgentSpec) { s.Name = "Bot" }},
		{"name with a slash", "acme", func(s *AgentSpec) { s.Name = "a/b" }},
		{"name too long", "acme", func(s *AgentSpec) { s.Name = strings.Repeat("a", 49) }},
		{"no credentials", "acme", func(s *AgentSpec) { s.Creds = nil }},
		{"credential with a quote", "acme", func(s *AgentSpec) { s.Creds = []string{`a"b`} }},
		{"credential of dots", "acme", func(s *AgentSpec) { s.Creds = []string{".."} }},
		{"lower-case method", "acme", func(s *AgentSpec) { s.Methods = []string{"get"} }},
		{"TRACE", "acme", func(s *AgentSpec) { s.Methods = []string{"TRACE"} }},
		{"relative path", "acme", func(s *AgentSpec) { s.Paths = []string{"v1/x"} }},
		{"glob in the middle", "acme", func(s *AgentSpec) { s.Paths = []string{"/v1/*/x"} }},
		{"glob inside a segment", "acme", func(s *AgentSpec) { s.Paths = []string{"/v1/balance*"} }},
		{"glob at the start", "acme", func(s *AgentSpec) { s.Paths = []string{"*/balance"} }},
		{"a query", "acme", func(s *AgentSpec) { s.Paths = []string{"/v1/charges?x=/balance"} }},
		{"dot segment", "acme", func(s *AgentSpec) { s.Paths = []string{"/v1/../admin"} }},
		{"empty segment", "acme", func(s *AgentSpec) { s.Paths = []string{"/v1//x"} }},
		{"quote in a path", "acme", func(s *AgentSpec) { s.Paths = []string{`/v1/"x`} }},
		{"HCL interpolation in a path", "acme", func(s *AgentSpec) { s.Paths = []string{"/v1/${x}"} }},
		{"tool name with a slash", "acme", func(s *AgentSpec) { s.Tools = []string{"a/b"} }},
		{"tool glob inside a name", "acme", func(s *AgentSpec) { s.Tools = []string{"create_*"} }},
		{"tool name too long", "acme", func(s *AgentSpec) { s.Tools = []string{strings.Repeat("t", 129)} }},
		{"denied tool *", "acme", func(s *AgentSpec) { s.DenyTools = []string{"*"} }},
		{"tool allowed and denied", "acme", func(s *AgentSpec) { s.Tools, s.DenyTools = []string{"x"}, []string{"x"} }},
		{"TTL under a second", "acme", func(s *AgentSpec) { s.TokenTTL = time.Millisecond }},
		{"max TTL under TTL", "acme", func(s *AgentSpec) { s.TokenTTL, s.TokenMaxTTL = time.Hour, time.Minute }},
	} {
		s := ok
		s.Creds = append([]string(nil), ok.Creds...)
		tc.edit(&s)
		if err := s.validate(tc.org); err == nil {
			t.Errorf("%s: accepted", tc.desc)
		} else if tc.org == "acme" && !errors.Is(err, ErrBadAgentSpec) {
			t.Errorf("%s: %v is not ErrBadAgentSpec", tc.desc, err)
		}
	}
	s := ok
	if err := s.validate("acme"); err != nil || s.TokenTTL != DefaultAgentTokenTTL || s.TokenMaxTTL != DefaultAgentTokenTTL {
		t.Errorf("defaults: %v, ttl %v max %v", err, s.TokenTTL, s.TokenMaxTTL)
	}
}

// TestAgentPolicyGrantsOnlyItsCredentials: an agent's policy names its
// credentials' broker paths (mail/<cred> for an SMTP login), its rules as
// whole segments of the path after the method, read on each credential's
// base path (its description), and the token paths it needs; nothing else.
func TestAgentPolicyGrantsOnlyItsCredentials(t *testing.T) {
	current := map[string]credInfo{
		"k1":     {ID: "1", Type: "api_key", Service: "stripe"},
		"mailer": {ID: "2", Type: "password", Service: "smtp"},
		"basic":  {ID: "3", Type: "password", Service: "custom-http"},
	}
	for _, tc := range []struct {
		spec  AgentSpec
		paths string
	}{
		{AgentSpec{Name: "a", Creds: []string{"k2", "k1", "k1"}},
			"[orgs/acme/proxy/k1=read,update orgs/acme/proxy/k1/*=update orgs/acme/proxy/k2=read,update orgs/acme/proxy/k2/*=update]"},
		{AgentSpec{Name: "a", Creds: []string{"k1"}, Methods: []string{"GET", "HEAD"}},
			"[orgs/acme/proxy/k1=read orgs/acme/proxy/k1/GET/*=update orgs/acme/proxy/k1/HEAD/*=update]"},
		{AgentSpec{Name: "a", Creds: []string{"k1"}, Paths: []string{"/v1/balance", "/v1/charges/*"}},
			"[orgs/acme/proxy/k1=read orgs/acme/proxy/k1/+/v1/balance=update orgs/acme/proxy/k1/+/v1/charges/*=update]"},
		{AgentSpec{Name: "a", Creds: []string{"k1"}, Methods: []string{"GET"}, Paths: []string{"/v1/customers/+/sources"}},
			"[orgs/acme/proxy/k1=read orgs/acme/proxy/k1/GET/v1/customers/+/sources=update]"},
		{AgentSpec{Name: "a", Creds: []string{"k1"}, Tools: []string{"create_issue", "list_issues"}},
			"[orgs/acme/proxy/k1=read orgs/acme/proxy/k1/TOOL=update orgs/acme/proxy/k1/TOOL/create_issue=update orgs/acme/proxy/k1/TOOL/list_issues=update]"},
		{AgentSpec{Name: "a", Creds: []string{"k1"}, Methods: []string{"GET"}, Tools: []string{"*"}},
			"[orgs/acme/proxy/k1=read orgs/acme/proxy/k1/GET/*=update orgs/acme/proxy/k1/TOOL=update orgs/acme/proxy/k1/TOOL/*=update]"},
		{AgentSpec{Name: "a", Creds: []string{"k1"}, DenyTools: []string{"delete_repo"}},
			"[orgs/acme/proxy/k1=read,update orgs/acme/proxy/k1/*=update orgs/acme/proxy/k1/TOOL/delete_repo=deny]"},
		{AgentSpec{Name: "a", Creds: []string{"mailer", "basic"}, Methods: []string{"GET"}},
			"[orgs/acme/mail/mailer=read,update orgs/acme/proxy/basic=read orgs/acme/proxy/basic/GET/*=update]"},
	} {
		text := agentPolicyHCL("acme", tc.spec, current)
		var rules struct {
			Path map[string]*struct {
				Capabilities []string `hcl:"capabilities"`
			} `hcl:"path"`
		}
		if err := hcl.Decode(&rules, text); err != nil {
			t.Fatalf("policy does not parse: %v\n%s", err, text)
		}
		var granted []string
		for _, p := range slices.Sorted(maps.Keys(rules.Path)) {
			r := rules.Path[p]
			switch p {
			case "sys/capabilities-self", "auth/token/renew-self", "auth/token/revoke-self", "orgs/acme/trail-report",
				"orgs/acme/approvals/request", "orgs/acme/approvals/+/use", "orgs/acme/approvals/match", "orgs/acme/limits/lease", "orgs/acme/limits/spend":
				if fmt.Sprint(r.Capabilities) != "[update]" {
					t.Errorf("%s: %v", p, r.Capabilities)
				}
				continue
			case "auth/token/lookup-self", "sys/internal/ui/resultant-acl", "orgs/acme/agent-settings", "orgs/acme/approvals/+":
				if fmt.Sprint(r.Capabilities) != "[read]" {
					t.Errorf("%s: %v", p, r.Capabilities)
				}
				continue
			}
			if !strings.HasPrefix(p, "orgs/acme/proxy/") && !strings.HasPrefix(p, "orgs/acme/mail/") {
				t.Fatalf("policy grants %s, outside the credentials' paths", p)
			}
			granted = append(granted, p+"="+strings.Join(r.Capabilities, ","))
		}
		if fmt.Sprint(granted) != tc.paths {
			t.Errorf("paths %v, want %s", granted, tc.paths)
		}
	}
}

func TestOrgNamesCannotCoverOtherOrgsAgents(t *testing.T) {
	for _, name := range []string{"acme-agent", "acme-agent-x", "x-agent-y"} {
		if err := ValidateOrgName(name); !errors.Is(err, ErrBadOrgName) {
			t.Errorf("ValidateOrgName(%q) = %v", name, err)
		}
	}
	for _, name := range []string{"acme", "agent", "acme-agents", "secret-agentur"} {
		if err := ValidateOrgName(name); err != nil {
			t.Errorf("ValidateOrgName(%q) = %v", name, err)
		}
	}
}
