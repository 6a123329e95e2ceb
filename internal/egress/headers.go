package egress

import (
	"net/http"
	"regexp"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// hopByHopHeaders belong to one connection and are never forwarded
// (RFC 9110 section 7.6.1), in either direction.
var hopByHopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade",
}

// callerOnlyHeaders are the caller's, not the service's: its credentials
// for Vault or the portal, what would reveal the caller's network, and
// what the broker sets itself. Accept-Encoding is the broker's to choose,
// so that it receives bodies it can decode and scrub. Method overrides are
// dropped because services that honour them would let an agent allowed
// only GET send a POST.
var callerOnlyHeaders = []string{
	"Authorization", "Proxy-Authorization", "Cookie", "Host", "Content-Length",
	"Accept-Encoding", "Expect", "Forwarded", "X-Real-Ip", "Via",
	"X-Http-Method-Override", "X-Http-Method", "X-Method-Override",
}

// rewriteHeaders make some servers and proxies route a request by another
// path than its own, around the path the agent was authorized for: a call
// that carries one is refused, not quietly changed.
var rewriteHeaders = []string{"X-Original-Url", "X-Rewrite-Url", "X-Override-Url"}

// VaultTokenPattern matches Vault's service, batch and recovery tokens
// (hvs., hvb., hvr.), which must never reach a service.
var VaultTokenPattern = regexp.MustCompile(`\bhv[sbr]\.[A-Za-z0-9_-]{20,}`)

// OutboundHeaders checks the caller's headers and returns those to send.
// The injection's own header is removed too, since the caller may have put
// its Vault token there (an SDK sends its key in that header), and so is
// any header holding callerToken or a value shaped like a Vault token.
func OutboundHeaders(in http.Header, inj Injection, callerToken string) (http.Header, error) {
	if len(in) > MaxHeaders {
		return nil, BadRequest("at most %d headers may be sent", MaxHeaders)
	}
	out := make(http.Header, len(in)+3)
	size := 0
	for name, values := range in {
		if !httpguts.ValidHeaderFieldName(name) {
			return nil, BadRequest("header name %q is not valid", Truncate(name, 64))
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, BadRequest("header %s has a value with invalid characters", Truncate(name, 64))
			}
			size += len(name) + len(v)
		}
		if size > MaxHeaderBytes {
			return nil, BadRequest("headers are larger than %d bytes", MaxHeaderBytes)
		}
		out[http.CanonicalHeaderKey(name)] = append([]string(nil), values...)
	}
	for _, h := range rewriteHeaders {
		if out.Get(h) != "" {
			return nil, BadRequest("header %s is refused: it would route the call by another path than its own", h)
		}
	}
	DropHopByHop(out)
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
	for name, values := range out {
		for _, v := range values {
			if VaultTokenPattern.MatchString(v) || (len(callerToken) >= 8 && strings.Contains(v, callerToken)) {
				delete(out, name)
				break
			}
		}
	}
	return out, nil
}

// DropHopByHop removes hop-by-hop headers, including those the Connection
// header names.
func DropHopByHop(h http.Header) {
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

// AnswerHeaders returns the service's answer headers as the caller gets
// them: hop-by-hop headers, cookies (they would land on the broker's
// domain) and the length and encoding of a body that is decoded and
// scrubbed on the way are dropped; every value is scrubbed.
func AnswerHeaders(in http.Header, s *Scrubber) http.Header {
	out := make(http.Header, len(in))
	for k, vs := range in {
		for _, v := range vs {
			out.Add(k, s.String(v))
		}
	}
	DropHopByHop(out)
	for _, h := range []string{"Set-Cookie", "Set-Cookie2", "Content-Length", "Content-Encoding"} {
		out.Del(h)
	}
	return out
}
