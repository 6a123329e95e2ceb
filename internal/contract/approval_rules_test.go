package contract

import (
	"strings"
	"testing"
)

func TestApprovalRulesMatchSegmentBySegment(t *testing.T) {
	for _, c := range []struct {
		rule, method, path string
		want               bool
	}{
		{"POST /v1/charges", "POST", "/v1/charges", true},
		{"POST /v1/charges", "GET", "/v1/charges", false},
		{"POST /v1/charges", "POST", "/v1/charges/ch_1", false},
		{"POST /v1/charges/*", "POST", "/v1/charges/ch_1/capture", true},
		{"POST /v1/charges/*", "POST", "/v1/charges", false},
		{"* /v1/refunds", "DELETE", "/v1/refunds", true},
		{"DELETE /repos/+/+", "DELETE", "/repos/acme/api", true},
		{"DELETE /repos/+/+", "DELETE", "/repos/acme/api/issues", false},
		{"DELETE /repos/+/+", "DELETE", "/repos/acme", false},
		{"TOOL create_issue", "TOOL", "create_issue", true},
		{"TOOL create_issue", "POST", "create_issue", false},
		{"* /create_issue", "TOOL", "create_issue", false},
	} {
		r, err := ParseApprovalRule(c.rule)
		if err != nil {
			t.Fatalf("%s: %v", c.rule, err)
		}
		if got := r.Matches(c.method, c.path); got != c.want {
			t.Errorf("%s on %s %s: %v, want %v", c.rule, c.method, c.path, got, c.want)
		}
	}
	for _, c := range []struct{ rule, says string }{
		{"/v1/charges", "a method and a path"},
		{"TRACE /x", "the method must be"},
		{"POST v1/charges", "must start with '/'"},
		{"POST /v1/charges?x=1", "without the query"},
		{"POST /v1/ch*", "whole last segment"},
		{"POST /v1//charges", "empty segment"},
		{"TOOL bad tool!", "tool name"},
	} {
		if _, err := ParseApprovalRule(c.rule); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want an error saying %q", c.rule, err, c.says)
		}
	}
}
