package portal

import (
	"fmt"
	"testing"
)

// TestGrantedCredsReadsToolRules: what an agent's ACL lets it call, as the
// MCP server lists it: HTTP rules, remote tools allowed by name or glob,
// and tools denied whatever else allows them.
func TestGrantedCredsReadsToolRules(t *testing.T) {
	upd := aclPermissions{Capabilities: []string{"update"}}
	deny := aclPermissions{Capabilities: []string{"deny"}}
	p := "orgs/acme/proxy/"
	for _, tc := range []struct {
		desc        string
		exact, glob map[string]aclPermissions
		http        bool
		rules       string
		allowed     []string
		refused     []string
	}{
		{desc: "everything", exact: map[string]aclPermissions{p + "gh": upd}, glob: map[string]aclPermissions{p + "gh/": upd},
			http: true, rules: "[]", allowed: []string{"create_issue", "delete_repo"}},
		{desc: "GET only", glob: map[string]aclPermissions{p + "gh/GET/": upd},
			http: true, rules: "[GET /*]", refused: []string{"create_issue"}},
		{desc: "any method on one path", exact: map[string]aclPermissions{p + "gh/+/v1/x": upd},
			http: true, rules: "[any method /v1/x]", refused: []string{"create_issue"}},
		{desc: "two tools", exact: map[string]aclPermissions{p + "gh/TOOL": upd, p + "gh/TOOL/create_issue": upd, p + "gh/TOOL/list_issues": upd},
			rules: "[]", allowed: []string{"create_issue", "list_issues"}, refused: []string{"delete_repo", "create_issue2"}},
		{desc: "a tool glob", exact: map[string]aclPermissions{p + "gh/TOOL": upd}, glob: map[string]aclPermissions{p + "gh/TOOL/list_": upd},
			rules: "[]", allowed: []string{"list_issues", "list_repos"}, refused: []string{"create_issue"}},
		{desc: "everything but one tool", glob: map[string]aclPermissions{p + "gh/": upd}, exact: map[string]aclPermissions{p + "gh/TOOL/delete_repo": deny},
			http: true, rules: "[]", allowed: []string{"create_issue"}, refused: []string{"delete_repo"}},
		{desc: "a denied glob", glob: map[string]aclPermissions{p + "gh/": upd, p + "gh/TOOL/delete_": deny},
			http: true, rules: "[]", allowed: []string{"create_issue"}, refused: []string{"delete_repo", "delete_issue"}},
	} {
		granted := grantedCreds("acme", tc.exact, tc.glob)
		g := granted["gh"]
		if g == nil || len(granted) != 1 {
			t.Errorf("%s: granted %v", tc.desc, granted)
			continue
		}
		if g.http != tc.http || fmt.Sprint(g.rules) != tc.rules {
			t.Errorf("%s: http %v rules %v, want %v %s", tc.desc, g.http, g.rules, tc.http, tc.rules)
		}
		for _, tool := range tc.allowed {
			if !g.tools.allows(tool) {
				t.Errorf("%s: %s is not allowed (%+v)", tc.desc, tool, g.tools)
			}
		}
		for _, tool := range tc.refused {
			if g.tools.allows(tool) {
				t.Errorf("%s: %s is allowed (%+v)", tc.desc, tool, g.tools)
			}
		}
	}

	// A denied tool alone grants nothing; another org's paths are not this
	// org's; mail stays mail.
	granted := grantedCreds("acme", map[string]aclPermissions{
		p + "gh/TOOL/delete_repo":      deny,
		"orgs/acme-2/proxy/other/TOOL": upd,
		"orgs/acme/mail/mailer":        upd,
	}, nil)
	if len(granted) != 1 || granted["mailer"] == nil || granted["mailer"].use != "mail" {
		t.Errorf("granted %v", granted)
	}
}
