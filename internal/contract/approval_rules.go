package contract

import (
	"errors"
	"fmt"
	"strings"
)

// Approval rules name the calls of a credential a person must approve
// first: "POST /v1/charges/*", "* /v1/refunds", "DELETE /repos/+/+", or
// "TOOL create_issue" for a remote MCP tool. Paths match the decoded path
// segment by segment as agents' rules do (literal, '+' one segment, a
// last '*' anything below); the query is never matched. The engine checks
// the rules when they are written and on its Vault path; the edge, which
// gets them with the sealed injection, on its calls.

// ApprovalRule is one parsed rule.
type ApprovalRule struct {
	// Method is an HTTP method, "*" (any) or MethodTool.
	Method string
	// Path is a path rule, or the tool's name for MethodTool.
	Path string
}

func (r ApprovalRule) String() string { return r.Method + " " + r.Path }

// ParseApprovalRule reads one rule, saying what is wrong with a bad one.
func ParseApprovalRule(s string) (ApprovalRule, error) {
	method, path, ok := strings.Cut(strings.TrimSpace(s), " ")
	path = strings.TrimSpace(path)
	if !ok || path == "" {
		return ApprovalRule{}, fmt.Errorf("%q: a rule is a method and a path (POST /v1/charges/*), or TOOL and a tool's name", s)
	}
	r := ApprovalRule{Method: method, Path: path}
	switch {
	case method == MethodTool:
		if !ValidToolName(path) {
			return r, fmt.Errorf("%q: a tool name is 1 to 128 letters, digits, '_', '-' or '.' characters", s)
		}
	case method == "*" || ValidMethod(method):
		if err := ValidatePathRule(path); err != nil {
			return r, fmt.Errorf("%q: the path %w", s, err)
		}
	default:
		return r, fmt.Errorf("%q: the method must be *, TOOL or one of %s", s, strings.Join(Methods, ", "))
	}
	return r, nil
}

// Matches says whether the call of method on decodedPath (or, for
// method MethodTool, of tool decodedPath) falls under r.
func (r ApprovalRule) Matches(method, decodedPath string) bool {
	if r.Method == MethodTool || method == MethodTool {
		return r.Method == method && r.Path == decodedPath
	}
	if r.Method != "*" && r.Method != method {
		return false
	}
	return MatchPathRule(r.Path, decodedPath)
}

// AnyApprovalRuleHolds says whether any of rules (as ParseApprovalRule
// reads them) holds for method on path; a rule that does not parse holds
// for nothing.
func AnyApprovalRuleHolds(rules []string, method, path string) bool {
	for _, s := range rules {
		if r, err := ParseApprovalRule(s); err == nil && r.Matches(method, path) {
			return true
		}
	}
	return false
}

// MatchPathRule matches a path rule against a decoded path, segment by
// segment.
func MatchPathRule(rule, path string) bool {
	rs, ps := strings.Split(rule, "/")[1:], strings.Split(path, "/")
	if len(ps) == 0 || ps[0] != "" {
		return false
	}
	ps = ps[1:]
	for i, seg := range rs {
		if seg == "*" && i == len(rs)-1 {
			return len(ps) > i
		}
		if i >= len(ps) || (seg != "+" && seg != ps[i]) {
			return false
		}
	}
	return len(ps) == len(rs)
}

// ValidatePathRule checks one path rule: segments that are literal, '+'
// (one segment) or, last, '*' (anything below).
func ValidatePathRule(p string) error {
	if len(p) > 512 || !strings.HasPrefix(p, "/") {
		return errors.New("must start with '/' (and be at most 512 characters)")
	}
	if strings.Contains(p, "?") {
		return errors.New("is matched without the query: leave it out")
	}
	segs := strings.Split(p, "/")[1:]
	for i, seg := range segs {
		last := i == len(segs)-1
		switch {
		case seg == "+" || (seg == "*" && last) || (seg == "" && last):
		case seg == "":
			return errors.New("has an empty segment, which is never called")
		case seg == "." || seg == "..":
			return errors.New("has a '.' or '..' segment, which is never called")
		case strings.ContainsAny(seg, "*+"):
			return errors.New("may have '*' only as a whole last segment (/v1/charges/*) and '+' only as a whole segment (/v1/customers/+/sources)")
		}
	}
	return nil
}
