package contract

import (
	"crypto/hmac"
	"crypto/sha256"
	"strings"
	"time"
)

// What the edge tells the engine of an agent's calls (trail lines, the
// approvals it asks for, the spend it read) is signed with the report key
// the engine put in the agent's sealed injection, which the agent cannot
// open: an agent's token alone cannot tell the engine any of it.

// Report kinds, the first part of what ReportMAC signs.
const (
	ReportTrail    = "credentials trail v1"
	ReportApproval = "credentials approval request v1"
	ReportSpend    = "credentials spend v1"
)

// ReportMAC is HMAC-SHA256 under key of kind and parts, each ended by a
// zero byte so that no two lists of parts sign alike.
func ReportMAC(key []byte, kind string, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range append([]string{kind}, parts...) {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

// TrailLine is one call of an agent's trail, as the edge reports it and
// the engine keeps it: nothing secret, no query, header or body.
type TrailLine struct {
	At         time.Time `json:"at"`
	Ingress    string    `json:"ingress"`
	Credential string    `json:"credential"`
	Method     string    `json:"method,omitempty"`
	Path       string    `json:"path,omitempty"`
	Tool       string    `json:"tool,omitempty"`
	Status     int       `json:"status"`
	Bytes      int64     `json:"bytes"`
	DurationMS float64   `json:"duration_ms"`
}

// MaxTrailPath bounds a trail line's path.
const MaxTrailPath = 1024

// TrailPath is a call's path as a trail keeps it: without its query,
// bounded.
func TrailPath(p string) string {
	p, _, _ = strings.Cut(p, "?")
	return p[:min(len(p), MaxTrailPath)]
}
