// Package egress is the one place where the product decides what may leave
// it for a service: the dial guard (no loopback, private or link-local
// address unless the operator allows it, checked on the address actually
// dialled), the caller-header policy, path normalization, injection of a
// credential into a request, the streaming scrubber that keeps the secret
// out of what comes back, and the rewriting of Location and Link to broker
// URLs. The engine's Vault path, the portal's edge and the engine's OAuth,
// revocation, userinfo and service-account clients all use it, so they
// cannot drift apart.
package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// PrivateTargetsEnv names the operator setting (plugin environment at
// registration) that lists the CIDRs and host names the engine may reach
// although they are loopback, private or link-local. Org admins can neither
// see nor change it.
const PrivateTargetsEnv = "CREDENTIALS_PRIVATE_TARGETS"

// ErrPrivateTarget is returned at dial time for an address the guard
// refuses, and for a plain-http URL to a public host.
var ErrPrivateTarget = errors.New("non-public address")

// Guard decides which addresses may be dialled. The zero Guard allows
// public addresses only.
type Guard struct {
	prefixes []netip.Prefix
	// hosts are exact host names, or "*.suffix" for subdomains.
	hosts []string
	raw   string
}

// ParseGuard reads a comma-separated list of CIDRs, IP addresses and host
// names (a leading "*." allows subdomains) that may be reached although
// they are not public.
func ParseGuard(list string) (*Guard, error) {
	g := &Guard{raw: strings.TrimSpace(list)}
	for _, item := range strings.Split(list, ",") {
		item = strings.ToLower(strings.TrimSpace(item))
		if item == "" {
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			g.prefixes = append(g.prefixes, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(item); err == nil {
			g.prefixes = append(g.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		name := strings.TrimPrefix(item, "*.")
		if name == "" || strings.ContainsAny(name, "/:*[] ") {
			return nil, fmt.Errorf("%s: %q is neither a CIDR, an IP address nor a host name", PrivateTargetsEnv, item)
		}
		g.hosts = append(g.hosts, item)
	}
	return g, nil
}

// String is the list the guard was parsed from, so that a guard can be
// handed to another process (the edge) as it is.
func (g *Guard) String() string {
	if g == nil {
		return ""
	}
	return g.raw
}

// allowedHost says whether the operator named host (a name, not an address).
func (g *Guard) allowedHost(host string) bool {
	if g == nil {
		return false
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range g.hosts {
		if suffix, ok := strings.CutPrefix(h, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if h == host {
			return true
		}
	}
	return false
}

// AllowedAddr says whether ip may be dialled: public, or in a CIDR the
// operator allows.
func (g *Guard) AllowedAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if PublicAddr(ip) {
		return true
	}
	if g == nil {
		return false
	}
	for _, p := range g.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Private says whether host (a name or an IP literal) is one of the
// operator's private targets; plain http is allowed only to those.
func (g *Guard) Private(host string) bool {
	if g.allowedHost(host) {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && !PublicAddr(ip.Unmap()) && g.AllowedAddr(ip)
}

// CheckURL refuses what no client of the engine may call: a scheme other
// than https, except plain http to a private target the operator allows,
// and URLs with user info.
func (g *Guard) CheckURL(u *url.URL) error {
	switch {
	case u == nil || u.Host == "":
		return fmt.Errorf("%w: no host", ErrPrivateTarget)
	case u.User != nil:
		return errors.New("URLs with user info are refused")
	case strings.EqualFold(u.Scheme, "https"):
		return nil
	case strings.EqualFold(u.Scheme, "http") && g.Private(u.Hostname()):
		return nil
	}
	return fmt.Errorf("%w: %s://%s: only https is called, except plain http to the operator's private targets", ErrPrivateTarget, u.Scheme, u.Hostname())
}

// DialContext dials addr if the guard allows it. A host name the operator
// listed is dialled as it is; any other name is resolved and each address
// is checked as it is dialled, so a name that resolves to a public address
// when it is checked and to an internal one later (DNS rebinding) is still
// refused.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrPrivateTarget, addr)
	}
	if !g.allowedHost(host) {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			h, _, err := net.SplitHostPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrPrivateTarget, address)
			}
			ip, err := netip.ParseAddr(h)
			if err != nil || !g.AllowedAddr(ip) {
				return fmt.Errorf("%w: %s", ErrPrivateTarget, h)
			}
			return nil
		}
	}
	return d.DialContext(ctx, network, addr)
}

// DialTimeout bounds connecting, inside whatever bounds the whole call.
const DialTimeout = 10 * time.Second

// ClientOptions tune a guarded client.
type ClientOptions struct {
	// Timeout bounds a whole call, body included; zero for none (the edge
	// streams and bounds calls with a context instead).
	Timeout time.Duration
	// MaxIdleConnsPerHost keeps connections to a busy service open.
	MaxIdleConnsPerHost int
	// MaxResponseHeaderBytes bounds a service's answer headers.
	MaxResponseHeaderBytes int64
	// RootCAs are the CAs servers are checked against; nil: the system's.
	RootCAs *x509.CertPool
}

// Transport returns a transport that dials through the guard, takes no
// proxy from the environment (a proxy would do the dialling, and the
// check would not see the real target), refuses URLs CheckURL refuses and
// leaves compressed bodies as they come, for DecodeBody.
func (g *Guard) Transport(o ClientOptions) http.RoundTripper {
	if o.MaxIdleConnsPerHost == 0 {
		o.MaxIdleConnsPerHost = 32
	}
	if o.MaxResponseHeaderBytes == 0 {
		o.MaxResponseHeaderBytes = MaxHeaderBytes
	}
	t := &http.Transport{
		Proxy:                  nil,
		DialContext:            g.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           512,
		MaxIdleConnsPerHost:    o.MaxIdleConnsPerHost,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: o.MaxResponseHeaderBytes,
		DisableCompression:     true,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: o.RootCAs},
	}
	return checkedTransport{guard: g, next: t}
}

// Client returns an HTTP client on Transport that follows no redirect: a
// redirect is returned to the caller, since following it would carry the
// credential wherever the service points.
func (g *Guard) Client(o ClientOptions) *http.Client {
	return &http.Client{
		Transport:     g.Transport(o),
		Timeout:       o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type checkedTransport struct {
	guard *Guard
	next  *http.Transport
}

func (t checkedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.guard.CheckURL(req.URL); err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	return t.next.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// pool.
func (t checkedTransport) CloseIdleConnections() { t.next.CloseIdleConnections() }

// nonPublicPrefixes are ranges the netip predicates do not cover: shared
// (CGNAT), "this network", benchmarking, reserved, IETF protocol
// assignments, documentation, discard and 6to4/Teredo relays that embed
// other addresses.
var nonPublicPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("192.88.99.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001::/32"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("2002::/16"),
	netip.MustParsePrefix("fec0::/10"),
	// Local-use NAT64 embeds its IPv4 address at an operator's choice of
	// offset; nothing public is reached through it.
	netip.MustParsePrefix("64:ff9b:1::/48"),
}

// nat64Prefixes embed an IPv4 address in their last 32 bits; the embedded
// address is what a NAT64 gateway would reach.
var nat64Prefixes = []netip.Prefix{
	netip.MustParsePrefix("64:ff9b::/96"),
}

// PublicAddr says whether ip is a globally routable unicast address.
func PublicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range nat64Prefixes {
		if p.Contains(ip) {
			b := ip.As16()
			return PublicAddr(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		}
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
