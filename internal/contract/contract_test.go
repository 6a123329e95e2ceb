package contract

import (
	"regexp"
	"testing"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		valid func(string) bool
		in    string
		want  bool
	}{
		{"org", ValidOrgName, "acme", true},
		{"org with a digit first", ValidOrgName, "9lives", true},
		{"org with -agent- inside", ValidOrgName, "x-agent-y", false},
		{"org ending in -agent", ValidOrgName, "x-agent", false},
		{"org starting with -", ValidOrgName, "-acme", false},
		{"org with a dot", ValidOrgName, "ac.me", false},
		{"org of 64 characters", ValidOrgName, "a123456789012345678901234567890123456789012345678901234567890123", false},
		{"credential", ValidCredName, "stripe-live", true},
		{"credential with dots and underscores", ValidCredName, "gh_app.v2", true},
		{"credential of only dots", ValidCredName, "..", false},
		{"credential with a slash", ValidCredName, "a/b", false},
		{"credential in upper case", ValidCredName, "Stripe", false},
		{"empty credential", ValidCredName, "", false},
		{"service", ValidServiceName, "openai", true},
		{"service starting with .", ValidServiceName, ".x", false},
		{"method", ValidMethod, "PATCH", true},
		{"TRACE", ValidMethod, "TRACE", false},
		{"lower-case method", ValidMethod, "get", false},
	} {
		if got := tc.valid(tc.in); got != tc.want {
			t.Errorf("%s: %q valid = %v, want %v", tc.name, tc.in, got, tc.want)
		}
	}
}

// A route variable must take what the Valid func takes (the handler then
// refuses the few extra a pattern cannot tell, like "..").
func TestRouteVarsFollowTheRules(t *testing.T) {
	pattern := func(v string) *regexp.Regexp {
		_, rule, _ := cutVar(v)
		return regexp.MustCompile("^" + rule + "$")
	}
	for _, tc := range []struct {
		v     string
		valid func(string) bool
		ins   []string
	}{
		{OrgVar(), ValidOrgName, []string{"acme", "a", "x-agent", "-a", "A", "a.b"}},
		{CredVar("name"), ValidCredName, []string{"stripe-live", "a.b_c", "..", "a/b", "A"}},
		{ServiceVar("service"), ValidServiceName, []string{"openai", "x.y", ".x", "X"}},
	} {
		p := pattern(tc.v)
		for _, in := range tc.ins {
			if tc.valid(in) && !p.MatchString(in) {
				t.Errorf("%s refuses %q, which the rule takes", tc.v, in)
			}
		}
	}
}

func cutVar(v string) (name, rule string, ok bool) {
	inner := v[1 : len(v)-1]
	for i := range inner {
		if inner[i] == ':' {
			return inner[:i], inner[i+1:], true
		}
	}
	return inner, "", false
}

func TestPaths(t *testing.T) {
	if got := CallPath("acme", "stripe", "GET", "/v1/balance"); got != "orgs/acme/proxy/stripe/GET/v1/balance" {
		t.Errorf("CallPath = %q", got)
	}
	if got := UsePath("acme", UseMail, "smtp"); got != "orgs/acme/mail/smtp" {
		t.Errorf("UsePath = %q", got)
	}
	for in, want := range map[string]string{"orgs/acme/": "acme", "orgs/acme": "acme", "orgs/a/b/": "", "secret/": "", "orgs/x-agent/": ""} {
		got, ok := OrgOfMount(in)
		if got != want || ok != (want != "") {
			t.Errorf("OrgOfMount(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}
