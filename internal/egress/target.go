package egress

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Limits that keep one call's parsing cheap, whatever a caller sends.
const (
	MaxPathLen     = 8 << 10
	MaxHeaders     = 100
	MaxHeaderBytes = 64 << 10
)

// Error is a refusal or failure with the HTTP status the caller gets and a
// message that names no secret. Permanent errors are the caller's to fix:
// retrying the same call cannot succeed, and SDKs are told so.
type Error struct {
	Status    int
	Msg       string
	Permanent bool
	// RetryAfter, in seconds, is when a refused call (429) may be sent
	// again; 0: not said.
	RetryAfter int
}

func (e *Error) Error() string { return e.Msg }

// BadRequest is the caller's mistake, said plainly.
func BadRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf(format, args...), Permanent: true}
}

// Service is what the egress needs of a catalog entry: where a credential
// may be sent.
type Service struct {
	Name string `json:"name"`
	// BaseURLs are the only origins and path prefixes that may be called;
	// a host may start with "*." to allow its subdomains.
	BaseURLs []string `json:"base_urls"`
}

// CleanPath checks the path of a call (percent-encoded, without query) and
// returns it decoded, as Vault's ACL and the agent's rules see it. It
// refuses everything a server or proxy on the way might normalize into a
// different path than the one authorized: '.' and '..' segments (also
// "..;" and percent-encoded or double-encoded), encoded slashes and
// backslashes, empty segments, and control characters.
func CleanPath(escaped string) (string, error) {
	if escaped == "" || escaped[0] != '/' {
		return "", BadRequest("path must start with '/'")
	}
	if len(escaped) > MaxPathLen {
		return "", BadRequest("path is longer than %d bytes", MaxPathLen)
	}
	for i := 0; i < len(escaped); i++ {
		if c := escaped[i]; c <= ' ' || c == 0x7f || c == '#' || c == '\\' || c >= 0x80 || c == '?' {
			return "", BadRequest("path must be printable ASCII without spaces, '#', '?' or '\\' (percent-encode other characters)")
		}
	}
	lower := strings.ToLower(escaped)
	for _, enc := range []string{"%2f", "%5c", "%2e", "%25", "%00"} {
		if strings.Contains(lower, enc) {
			return "", BadRequest("path must not percent-encode '/', '\\', '.', '%%' or NUL: servers decode them differently")
		}
	}
	decoded, err := url.PathUnescape(escaped)
	if err != nil {
		return "", BadRequest("path has an invalid percent-encoding")
	}
	segs := strings.Split(decoded, "/")[1:]
	for i, seg := range segs {
		if seg == "" && i != len(segs)-1 {
			return "", BadRequest("path must not contain empty segments ('//')")
		}
		// Some servers cut a segment at ';' (path parameters) before
		// resolving dots: "..;" is ".." to them.
		bare, _, _ := strings.Cut(seg, ";")
		if bare == "." || bare == ".." {
			return "", BadRequest("path must not contain '.' or '..' segments")
		}
	}
	for _, r := range decoded {
		if r < ' ' || r == 0x7f {
			return "", BadRequest("path must not contain control characters, encoded or not")
		}
	}
	return decoded, nil
}

// ResolveTarget turns the caller's path (with query) into the URL to call.
// A path that starts with "/" is relative to the service's first base URL
// (as an SDK's base URL is); an absolute http(s) URL must fall under one of
// base_urls. The path is checked by CleanPath; the query is kept as the
// caller wrote it.
func ResolveTarget(svc Service, raw string) (*url.URL, error) {
	if len(svc.BaseURLs) == 0 {
		return nil, BadRequest("service %s has no base_urls: the broker cannot call it", svc.Name)
	}
	if raw == "" {
		return nil, BadRequest("path is required, e.g. /v1/balance")
	}
	if len(raw) > MaxPathLen {
		return nil, BadRequest("path is longer than %d bytes", MaxPathLen)
	}
	var base *url.URL
	rest := raw
	switch {
	case strings.HasPrefix(raw, "//"):
		return nil, BadRequest("path must start with a single '/' or be an absolute URL under the service's base_urls")
	case strings.HasPrefix(raw, "/"):
		b, err := url.Parse(svc.BaseURLs[0])
		if err != nil || strings.HasPrefix(b.Hostname(), "*.") {
			return nil, BadRequest("service %s has no single default base URL: give an absolute URL under one of its base_urls", svc.Name)
		}
		base = b
	case strings.HasPrefix(raw, "https://") || strings.HasPrefix(raw, "http://"):
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || u.User != nil || u.Opaque != "" {
			return nil, BadRequest("path is not a valid absolute URL")
		}
		if MatchBaseURL(svc, u) == nil {
			return nil, BadRequest("%s://%s%s is not under the base_urls of service %s", u.Scheme, u.Host, u.EscapedPath(), svc.Name)
		}
		// The caller's URL names its own host (a subdomain under a
		// wildcard); the path below is taken whole, not relative to base.
		base = &url.URL{Scheme: u.Scheme, Host: u.Host}
		rest = strings.TrimPrefix(raw, u.Scheme+"://"+u.Host)
		if rest == "" {
			rest = "/"
		}
		if !strings.HasPrefix(rest, "/") && !strings.HasPrefix(rest, "?") {
			return nil, BadRequest("path is not a valid absolute URL")
		}
	default:
		return nil, BadRequest("path must start with '/' or be an absolute http(s) URL under the service's base_urls")
	}

	pathPart, query, _ := strings.Cut(rest, "?")
	if pathPart == "" {
		pathPart = "/"
	}
	if _, err := CleanPath(pathPart); err != nil {
		return nil, err
	}
	if err := checkQuery(query); err != nil {
		return nil, err
	}
	if VaultTokenPattern.MatchString(raw) {
		return nil, BadRequest("path carries what looks like a Vault token; send it only in the request's auth header")
	}
	joined := strings.TrimSuffix(base.EscapedPath(), "/") + pathPart
	target, err := url.Parse(base.Scheme + "://" + base.Host + joined)
	if err != nil {
		return nil, BadRequest("path is not a valid URL path")
	}
	target.RawQuery = query
	// Re-check the result as a whole: whatever the parts were, the URL
	// called must fall under a base URL.
	if MatchBaseURL(svc, target) == nil {
		return nil, BadRequest("%s://%s%s is not under the base_urls of service %s", target.Scheme, target.Host, target.EscapedPath(), svc.Name)
	}
	return target, nil
}

func checkQuery(q string) error {
	if strings.Contains(q, "?") {
		// Harmless to servers, but a second '?' usually means a path was
		// pasted twice; refuse rather than guess.
		return BadRequest("path has more than one '?'")
	}
	for i := 0; i < len(q); i++ {
		if c := q[i]; c <= ' ' || c == 0x7f || c == '#' || c >= 0x80 {
			return BadRequest("query must be printable ASCII without spaces or '#' (percent-encode other characters)")
		}
	}
	return nil
}

// MatchBaseURL returns the base URL of svc that u falls under: same scheme,
// host (or a subdomain of a "*." host), port, and a path under the base's
// path on a segment boundary.
func MatchBaseURL(svc Service, u *url.URL) *url.URL {
	for _, raw := range svc.BaseURLs {
		b, err := url.Parse(raw)
		if err != nil {
			continue
		}
		if !strings.EqualFold(b.Scheme, u.Scheme) || EffectivePort(b) != EffectivePort(u) {
			continue
		}
		if !hostMatches(strings.ToLower(b.Hostname()), strings.ToLower(u.Hostname())) {
			continue
		}
		bp := strings.TrimSuffix(b.EscapedPath(), "/")
		up := u.EscapedPath()
		if bp == "" || up == bp || strings.HasPrefix(up, bp+"/") {
			return b
		}
	}
	return nil
}

func hostMatches(pattern, host string) bool {
	if host == "" {
		return false
	}
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		return strings.HasSuffix(host, "."+suffix) && len(host) > len(suffix)+1
	}
	return pattern == host
}

// EffectivePort is u's port, or its scheme's default.
func EffectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// Truncate shortens s for a message.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
