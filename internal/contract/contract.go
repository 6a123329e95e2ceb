// Package contract holds what the engine and its clients (the portal's
// pages and edge, agent provisioning, the operator commands) must agree on,
// each written once: the rules for org, credential and service names, where
// an org's mount and a credential's paths are, the methods the broker
// carries, and the entity metadata keys agent provisioning writes and the
// engine reads. A name that passes these rules can never bend a Vault path.
package contract

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// The name rules, as regular expressions without anchors, so that the
// portal's route patterns are made from the same text.
const (
	orgNameRule     = `[a-z0-9][a-z0-9-]{0,62}`
	credNameRule    = `[a-z0-9_.-]{1,128}`
	serviceNameRule = `[a-z0-9][a-z0-9_.-]{0,63}`
)

var (
	orgNamePattern     = regexp.MustCompile(`^` + orgNameRule + `$`)
	credNamePattern    = regexp.MustCompile(`^` + credNameRule + `$`)
	serviceNamePattern = regexp.MustCompile(`^` + serviceNameRule + `$`)
)

// The rules said to a person who broke one.
const (
	OrgNameRule     = `org name must be 1-63 lowercase letters, digits or '-', starting with a letter or digit, without "-agent-" or a "-agent" ending`
	CredNameRule    = `credential name must be 1-128 lowercase letters, digits, '-', '_' or '.', and not only dots`
	AppNameRule     = `app name must be 1-128 lowercase letters, digits, '-', '_' or '.'`
	ServiceNameRule = `service name must be 1-64 lowercase letters, digits, '-', '_' or '.'`
)

// ValidOrgName says whether name can name an org. Names containing
// "-agent-" or ending in "-agent" are refused: org x's agent names
// (orgs-x-agent-*) would otherwise cover the policies of an org named
// "x-agent..." and let x's agent managers rewrite them.
func ValidOrgName(name string) bool {
	return orgNamePattern.MatchString(name) && !strings.Contains(name, "-agent-") && !strings.HasSuffix(name, "-agent")
}

// ValidCredName says whether name can name a credential or an OAuth app
// (both are path segments under the mount).
func ValidCredName(name string) bool {
	return credNamePattern.MatchString(name) && strings.Trim(name, ".") != ""
}

// ValidServiceName says whether name can name a catalog service.
func ValidServiceName(name string) bool { return serviceNamePattern.MatchString(name) }

// Route variables for gorilla/mux in the portal's routes, made from the
// rules above. The handlers still check a name with its Valid func, since a
// pattern cannot say "not only dots" or "no -agent ending".
func OrgVar() string                { return "{org:" + orgNameRule + "}" }
func CredVar(name string) string    { return "{" + name + ":" + credNameRule + "}" }
func ServiceVar(name string) string { return "{" + name + ":" + serviceNameRule + "}" }

// MountPrefix is the path under which every org's mount lives.
const MountPrefix = "orgs/"

// Mount is where an org's engine is mounted, without a trailing slash.
func Mount(org string) string { return MountPrefix + org }

// OrgOfMount is the org of a mount path ("orgs/acme" or "orgs/acme/").
func OrgOfMount(path string) (string, bool) {
	org, ok := strings.CutPrefix(strings.TrimSuffix(path, "/"), MountPrefix)
	if !ok || !ValidOrgName(org) {
		return "", false
	}
	return org, true
}

// The path families of a credential an agent may be granted.
const (
	UseProxy = "proxy"
	UseMail  = "mail"
)

// UsePath is a credential's proxy/ or mail/ path under org's mount
// ("orgs/acme/proxy/stripe"), which agents' policies grant.
func UsePath(org, use, cred string) string { return Mount(org) + "/" + use + "/" + cred }

// CallPath is the Vault path (without /v1/) that authorizes method on the
// decoded path of cred: orgs/<org>/proxy/<cred>/<METHOD><path>. Method and
// path are in the path itself so that Vault's own ACL decides an agent's
// rules, segment by segment (an agent allowed GET /v1/balance holds update
// on orgs/<org>/proxy/<cred>/GET/v1/balance), for the engine's buffered
// calls and the edge's streamed ones alike.
func CallPath(org, cred, method, decodedPath string) string {
	return UsePath(org, UseProxy, cred) + "/" + method + decodedPath
}

// MethodTool stands where a call path's method is for a remote MCP tool
// call: orgs/<org>/proxy/<cred>/TOOL/<tool> authorizes calling tool on the
// credential's remote MCP server, and orgs/<org>/proxy/<cred>/TOOL (no
// tool) listing its tools and opening its session. Vault's ACL decides
// agents' tool rules the way it decides their method and path rules.
const MethodTool = "TOOL"

// ValidToolName says whether name is an MCP tool name the broker passes
// on: 1 to 128 of A-Z a-z 0-9 _ - . (the MCP specification's set).
func ValidToolName(name string) bool {
	if name == "" || len(name) > 128 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// Methods are the methods the broker sends. TRACE (which echoes the
// request, credential included) and CONNECT (a tunnel) are left out.
var Methods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// ValidMethod says whether m is one of Methods.
func ValidMethod(m string) bool { return slices.Contains(Methods, m) }

// MethodRule says which methods are taken, for error messages.
func MethodRule() string { return "method must be one of " + strings.Join(Methods, ", ") }

// Entity metadata keys that agent provisioning writes on an agent's entity
// and the engine reads when the agent calls.
const (
	// MetaOrg is the org the agent belongs to.
	MetaOrg = "org"
	// MetaAgent is the agent's short name ("first-agent").
	MetaAgent = "agent"
	// MetaCredentialIDs records the ID each credential had when the agent
	// was given it ("name:id,..."; "-" for a name that did not exist then),
	// so a credential deleted and created again under the same name is not
	// the agent's to use.
	MetaCredentialIDs = "credential_ids"
)
