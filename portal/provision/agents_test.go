package provision

import (
	"errors"
	"fmt"
	"sort"
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

// TestAgentPolicyGrantsOnlyTheBroker: an agent's policy names its
// credentials' broker paths, its rules as whole segments of the path
// after the method, and the token paths it needs; nothing else.
func TestAgentPolicyGrantsOnlyTheBroker(t *testing.T) {
	for _, tc := range []struct {
		spec  AgentSpec
		paths string
	}{
		{AgentSpec{Name: "a", Creds: []string{"k2", "k1", "k1"}},
			"[orgs/acme/proxy/k1 orgs/acme/proxy/k1/* orgs/acme/proxy/k2 orgs/acme/proxy/k2/*]"},
		{AgentSpec{Name: "a", Creds: []string{"k1"}, Methods: []string{"GET", "HEAD"}},
			"[orgs/acme/proxy/k1/GET/* orgs/acme/proxy/k1/HEAD/*]"},
		{AgentSpec{Name: "a", Creds: []string{"k1"}, Paths: []string{"/v1/balance", "/v1/charges/*"}},
			"[orgs/acme/proxy/k1/+/v1/balance orgs/acme/proxy/k1/+/v1/charges/*]"},
		{AgentSpec{Name: "a", Creds: []string{"k1"}, Methods: []string{"GET"}, Paths: []string{"/v1/customers/+/sources"}},
			"[orgs/acme/proxy/k1/GET/v1/customers/+/sources]"},
	} {
		text := agentPolicyHCL("acme", tc.spec)
		var rules struct {
			Path map[string]*struct {
				Capabilities []string `hcl:"capabilities"`
			} `hcl:"path"`
		}
		if err := hcl.Decode(&rules, text); err != nil {
			t.Fatalf("policy does not parse: %v\n%s", err, text)
		}
		var broker []string
		for p, r := range rules.Path {
			switch p {
			case "sys/capabilities-self", "auth/token/renew-self", "auth/token/revoke-self":
				if fmt.Sprint(r.Capabilities) != "[update]" {
					t.Errorf("%s: %v", p, r.Capabilities)
				}
				continue
			case "auth/token/lookup-self":
				continue
			}
			if !strings.HasPrefix(p, "orgs/acme/proxy/") {
				t.Fatalf("policy grants %s, outside the broker", p)
			}
			if fmt.Sprint(r.Capabilities) != "[update]" {
				t.Errorf("%s: capabilities %v", p, r.Capabilities)
			}
			broker = append(broker, p)
		}
		sort.Strings(broker)
		if fmt.Sprint(broker) != tc.paths {
			t.Errorf("broker paths %v, want %s", broker, tc.paths)
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
