package credentials

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The broker's own limits, independent of the mount's configuration: they
// keep one request's parsing cheap whatever a caller sends.
const (
	maxBrokerPathLen     = 8 << 10
	maxBrokerHeaders     = 100
	maxBrokerHeaderBytes = 64 << 10
	// brokerDialTimeout bounds connecting, inside broker_timeout.
	brokerDialTimeout = 10 * time.Second
)

// brokerMethods are the methods the broker sends. TRACE (which echoes the
// request, credential included) and CONNECT (a tunnel) are left out.
var brokerMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
}

// errPrivateTarget is returned at dial time for a loopback, private,
// link-local or otherwise non-public address.
var errPrivateTarget = errors.New("non-public address")

// brokerClients are the broker's HTTP clients, shared by every call of the
// mount so that connections to a service are reused. The public client
// checks each address it connects to; the private one serves custom
// services with allow_private_targets. Neither follows redirects.
type brokerClients struct {
	once    sync.Once
	public  *http.Client
	private *http.Client
}

func (bc *brokerClients) client(allowPrivate bool) *http.Client {
	bc.once.Do(func() {
		bc.public = newBrokerClient(false)
		bc.private = newBrokerClient(true)
	})
	if allowPrivate {
		return bc.private
	}
	return bc.public
}

func newBrokerClient(allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: brokerDialTimeout, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		// Checked on the resolved address of every connection, so a name
		// that resolves to a public address when the service is defined and
		// to an internal one later (DNS rebinding) is still refused.
		dialer.Control = refuseNonPublic
	}
	t := &http.Transport{
		// No proxy from the environment: a proxy would do the dialing, and
		// the address check above would not see the real target.
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           512,
		MaxIdleConnsPerHost:    128,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxBrokerHeaderBytes,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
	}
	return &http.Client{
		Transport: t,
		// Redirects go back to the caller untouched: following one would
		// either carry the credential to wherever the service points, or
		// be useless without it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// refuseNonPublic is a net.Dialer Control function: it runs after name
// resolution, on the address actually dialled.
func refuseNonPublic(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", errPrivateTarget, address)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !publicAddr(ip) {
		return fmt.Errorf("%w: %s", errPrivateTarget, host)
	}
	return nil
}

// nonPublicPrefixes are ranges the netip predicates do not cover: shared
// (CGNAT), "this network", benchmarking, reserved, IETF protocol
// assignments, documentation and discard ranges.
var nonPublicPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("fec0::/10"),
}

// nat64Prefix embeds an IPv4 address in its last 32 bits; the embedded
// address is what a NAT64 gateway would reach.
var nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")

// publicAddr says whether ip is a globally routable unicast address.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if nat64Prefix.Contains(ip) {
		b := ip.As16()
		return publicAddr(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	}
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() ||
		ip.IsUnspecified() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	for _, p := range nonPublicPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// brokerError is a refusal or failure with the HTTP status the caller gets
// and a message that names no secret.
type brokerError struct {
	status int
	msg    string
}

func (e *brokerError) Error() string { return e.msg }

func badRequest(format string, args ...any) *brokerError {
	return &brokerError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// resolveTarget turns the caller's path into the URL to call. A path that
// starts with "/" is relative to the service's first base URL (as an SDK's
// base URL is); an absolute http(s) URL must fall under one of base_urls.
// The query is kept as the caller wrote it.
func resolveTarget(svc *service, raw string) (*url.URL, error) {
	if len(svc.BaseURLs) == 0 {
		return nil, badRequest("service %s has no base_urls: the broker cannot call it", svc.Name)
	}
	if raw == "" {
		return nil, badRequest("path is required, e.g. /v1/balance")
	}
	if len(raw) > maxBrokerPathLen {
		return nil, badRequest("path is longer than %d bytes", maxBrokerPathLen)
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c == 0x7f || c == '#' || c == '\\' || c >= 0x80 {
			return nil, badRequest("path must be printable ASCII without spaces, '#' or '\\' (percent-encode other characters)")
		}
	}

	var base *url.URL
	rest := raw
	switch {
	case strings.HasPrefix(raw, "//"):
		return nil, badRequest("path must start with a single '/' or be an absolute URL under the service's base_urls")
	case strings.HasPrefix(raw, "/"):
		b, err := url.Parse(svc.BaseURLs[0])
		if err != nil || strings.HasPrefix(b.Hostname(), "*.") {
			return nil, badRequest("service %s has no single default base URL: give an absolute URL under one of its base_urls", svc.Name)
		}
		base = b
	case strings.HasPrefix(raw, "https://") || strings.HasPrefix(raw, "http://"):
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || u.User != nil || u.Opaque != "" {
			return nil, badRequest("path is not a valid absolute URL")
		}
		base = matchBaseURL(svc, u)
		if base == nil {
			return nil, badRequest("%s://%s%s is not under the base_urls of service %s", u.Scheme, u.Host, u.EscapedPath(), svc.Name)
		}
		// The caller's URL names its own host (a subdomain under a
		// wildcard); the path below is taken whole, not relative to base.
		base = &url.URL{Scheme: u.Scheme, Host: u.Host}
		rest = strings.TrimPrefix(raw, u.Scheme+"://"+u.Host)
		if rest == "" {
			rest = "/"
		}
		if !strings.HasPrefix(rest, "/") && !strings.HasPrefix(rest, "?") {
			return nil, badRequest("path is not a valid absolute URL")
		}
	default:
		return nil, badRequest("path must start with '/' or be an absolute http(s) URL under the service's base_urls")
	}

	pathPart, query, _ := strings.Cut(rest, "?")
	if err := checkPathSegments(pathPart); err != nil {
		return nil, err
	}
	if vaultTokenPattern.MatchString(raw) {
		return nil, badRequest("path carries what looks like a Vault token; send it only in the request's auth header")
	}
	if strings.Contains(query, "?") {
		// Harmless to servers, but a second '?' usually means a path was
		// pasted twice; refuse rather than guess.
		return nil, badRequest("path has more than one '?'")
	}
	joined := strings.TrimSuffix(base.EscapedPath(), "/") + pathPart
	if joined == "" {
		joined = "/"
	}
	target, err := url.Parse(base.Scheme + "://" + base.Host + joined)
	if err != nil {
		return nil, badRequest("path is not a valid URL path: %s", strings.TrimPrefix(err.Error(), "parse "))
	}
	target.RawQuery = query
	// Re-check the result as a whole: whatever the parts were, the URL
	// called must fall under a base URL.
	if matchBaseURL(svc, target) == nil {
		return nil, badRequest("%s://%s%s is not under the base_urls of service %s", target.Scheme, target.Host, target.EscapedPath(), svc.Name)
	}
	return target, nil
}

// checkPathSegments refuses dot segments and backslashes, also when
// percent-encoded: servers and proxies that normalize them would otherwise
// let a path climb out of a base URL's prefix.
func checkPathSegments(p string) error {
	if p == "" {
		return nil
	}
	if !strings.HasPrefix(p, "/") {
		return badRequest("path must start with '/'")
	}
	decoded, err := url.PathUnescape(p)
	if err != nil {
		return badRequest("path has an invalid percent-encoding")
	}
	for _, seg := range strings.Split(decoded, "/") {
		if seg == "." || seg == ".." {
			return badRequest("path must not contain '.' or '..' segments")
		}
	}
	for _, r := range decoded {
		if r == '\\' || r < ' ' || r == 0x7f {
			return badRequest("path must not contain backslashes or control characters, encoded or not")
		}
	}
	return nil
}

// matchBaseURL returns the base URL of svc that u falls under: same scheme,
// host (or a subdomain of a "*." host), port, and a path under the base's
// path on a segment boundary.
func matchBaseURL(svc *service, u *url.URL) *url.URL {
	for _, raw := range svc.BaseURLs {
		b, err := url.Parse(raw)
		if err != nil {
			continue
		}
		if !strings.EqualFold(b.Scheme, u.Scheme) || effectivePort(b) != effectivePort(u) {
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

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// hopByHopHeaders belong to one connection and are never forwarded
// (RFC 9110 section 7.6.1), in either direction.
var hopByHopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade",
}

// callerOnlyHeaders are the caller's, not the service's: its credentials for
// Vault or the portal, and what would reveal the caller's network.
// Accept-Encoding is dropped so that the broker receives bodies it can
// scrub (Go's transport then asks for gzip and decodes it itself). Method
// overrides are dropped because services that honour them would let an
// agent allowed only GET send a POST.
var callerOnlyHeaders = []string{
	"Authorization", "Proxy-Authorization", "Cookie", "Host", "Content-Length",
	"Accept-Encoding", "Expect", "Forwarded", "X-Real-Ip", "Via",
	"X-Http-Method-Override", "X-Http-Method", "X-Method-Override",
}

// outboundHeaders checks the caller's headers and returns those to send.
// The injection's own header is removed too, since the caller may have put
// its Vault token there (an SDK sends its key in that header).
func outboundHeaders(in map[string][]string, inj injection) (http.Header, error) {
	if len(in) > maxBrokerHeaders {
		return nil, badRequest("at most %d headers may be sent", maxBrokerHeaders)
	}
	out := make(http.Header, len(in)+2)
	size := 0
	for name, values := range in {
		if !httpguts.ValidHeaderFieldName(name) {
			return nil, badRequest("header name %q is not valid", truncate(name, 64))
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, badRequest("header %s has a value with invalid characters", truncate(name, 64))
			}
			size += len(name) + len(v)
		}
		if size > maxBrokerHeaderBytes {
			return nil, badRequest("headers are larger than %d bytes", maxBrokerHeaderBytes)
		}
		out[http.CanonicalHeaderKey(name)] = append([]string(nil), values...)
	}
	dropHopByHop(out)
	for _, h := range callerOnlyHeaders {
		out.Del(h)
	}
	for name := range out {
		if strings.HasPrefix(name, "X-Vault-") || strings.HasPrefix(name, "X-Forwarded-") {
			delete(out, name)
		}
	}
	if inj.Header != "" {
		out.Del(inj.Header)
	}
	// Whatever header a caller put its Vault token in, it stays here.
	for name, values := range out {
		for _, v := range values {
			if vaultTokenPattern.MatchString(v) {
				delete(out, name)
				break
			}
		}
	}
	return out, nil
}

// vaultTokenPattern matches Vault's service, batch and recovery tokens
// (hvs., hvb., hvr.), which must never reach a service.
var vaultTokenPattern = regexp.MustCompile(`\bhv[sbr]\.[A-Za-z0-9_-]{20,}`)

// dropHopByHop removes hop-by-hop headers, including those the Connection
// header names.
func dropHopByHop(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHopHeaders {
		h.Del(name)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// classifySendError turns a transport failure into what the caller is told:
// never the raw error, whose URL may carry a query-injected secret.
func classifySendError(ctx context.Context, target *url.URL, timeout time.Duration, err error) *brokerError {
	switch {
	case errors.Is(err, errPrivateTarget):
		return &brokerError{status: http.StatusBadGateway, msg: fmt.Sprintf(
			"refused to connect to %s: it resolves to a loopback, private or link-local address, which only custom services with allow_private_targets may reach",
			target.Hostname())}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &brokerError{status: http.StatusGatewayTimeout, msg: fmt.Sprintf(
			"%s did not answer within broker_timeout (%s)", target.Host, timeout)}
	case errors.Is(err, context.Canceled):
		return &brokerError{status: http.StatusBadGateway, msg: "the call was cancelled"}
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return &brokerError{status: http.StatusBadGateway, msg: fmt.Sprintf("cannot resolve %s", target.Hostname())}
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return &brokerError{status: http.StatusBadGateway, msg: fmt.Sprintf("cannot connect to %s", target.Host)}
	}
	return &brokerError{status: http.StatusBadGateway, msg: fmt.Sprintf("calling %s failed", target.Host)}
}
