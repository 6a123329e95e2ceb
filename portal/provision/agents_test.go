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

func TestAgentPolicyGrantsOnlyTheBroker(t *testing.T) {
	for _, tc := range []struct {
		spec                            AgentSpec
		creds, methods, paths, required string
	}{
		{AgentSpec{Name: "a", Creds: []string{"k2", "k1", "k1"}}, "[k1 k2]", "[]", "[]", "[]"},
		{AgentSpec{Name: "a", Creds: []string{"k1"}, Methods: []string{"GET", "HEAD"}}, "[k1]", "[GET HEAD]", "[]", "[method path]"},
		{AgentSpec{Name: "a", Creds: []string{"k1"}, Paths: []string{"/v1/balance*", "*/models"}}, "[k1]", "[]", "[/v1/balance* */models]", "[method path]"},
	} {
		text := agentPolicyHCL("acme", tc.spec)
		var rules struct {
			Path map[string]*struct {
				Capabilities       []string                 `hcl:"capabilities"`
				RequiredParameters []string                 `hcl:"required_parameters"`
				AllowedParameters  map[string][]interface{} `hcl:"allowed_parameters"`
			} `hcl:"path"`
		}
		if err := hcl.Decode(&rules, text); err != nil {
			t.Fatalf("policy does not parse: %v\n%s", err, text)
		}
		var creds []string
		for p, r := range rules.Path {
			cred, ok := strings.CutPrefix(p, "orgs/acme/proxy/")
			if !ok {
				t.Fatalf("policy grants %s, outside the broker", p)
			}
			creds = append(creds, cred)
			if fmt.Sprint(r.Capabilities) != "[update]" {
				t.Errorf("%s: capabilities %v", p, r.Capabilities)
			}
			methods, paths := stringsOf(r.AllowedParameters["method"]), stringsOf(r.AllowedParameters["path"])
			if fmt.Sprint(methods) != tc.methods || fmt.Sprint(paths) != tc.paths || fmt.Sprint(r.RequiredParameters) != tc.required {
				t.Errorf("%s: methods %v paths %v required %v", p, methods, paths, r.RequiredParameters)
			}
		}
		sort.Strings(creds)
		if fmt.Sprint(creds) != tc.creds {
			t.Errorf("credentials %v, want %s", creds, tc.creds)
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
