package egress

import (
	"net/url"
	"strings"
)

// The service's own URLs in an answer (a redirect's Location, the pages of
// a Link header) must not send the agent to the service directly: its SDK
// would follow them with its Vault token as the key. They are rewritten to
// the same place through the broker.

// BrokerPath returns abs (an absolute URL) relative to the service's first
// base URL, with its query, when it falls under that URL; "" otherwise.
func BrokerPath(svc Service, abs *url.URL) string {
	if len(svc.BaseURLs) == 0 {
		return ""
	}
	base, err := url.Parse(svc.BaseURLs[0])
	if err != nil || strings.HasPrefix(base.Hostname(), "*.") {
		return ""
	}
	if !strings.EqualFold(abs.Scheme, base.Scheme) || !strings.EqualFold(abs.Hostname(), base.Hostname()) ||
		EffectivePort(abs) != EffectivePort(base) {
		return ""
	}
	bp := strings.TrimSuffix(base.EscapedPath(), "/")
	p := abs.EscapedPath()
	if bp != "" && p != bp && !strings.HasPrefix(p, bp+"/") {
		return ""
	}
	rel := strings.TrimPrefix(p, bp)
	if rel == "" {
		rel = "/"
	}
	if abs.RawQuery != "" {
		rel += "?" + abs.RawQuery
	}
	return rel
}

// RewriteLocation returns a redirect's Location as the caller should get
// it: brokerBase plus the path when it points within the service's first
// base URL; otherwise as it is (a signed download URL elsewhere, say), which
// clients follow without the broker's key.
func RewriteLocation(svc Service, target *url.URL, loc, brokerBase string) string {
	ref, err := url.Parse(loc)
	if err != nil {
		return loc
	}
	if rel := BrokerPath(svc, target.ResolveReference(ref)); rel != "" && brokerBase != "" {
		return strings.TrimSuffix(brokerBase, "/") + rel
	}
	return loc
}

// RewriteLink rewrites each link of a Link header (RFC 8288) that falls
// under the service's first base URL to its broker URL, and drops links to
// anywhere else under the service's base URLs, which a paging client would
// follow with its Vault token. Links to other origins (documentation) are
// kept. A header that cannot be parsed is dropped whole.
func RewriteLink(svc Service, target *url.URL, value, brokerBase string) string {
	var out []string
	rest := strings.TrimSpace(value)
	for rest != "" {
		if rest[0] != '<' {
			return ""
		}
		end := strings.IndexByte(rest, '>')
		if end < 0 {
			return ""
		}
		ref, params := rest[1:end], rest[end+1:]
		// Parameters run to the next link's comma outside quotes.
		cut, inQuote := len(params), false
		for i := 0; i < len(params); i++ {
			switch params[i] {
			case '"':
				inQuote = !inQuote
			case ',':
				if !inQuote {
					cut = i
					i = len(params)
				}
			}
		}
		rest = strings.TrimSpace(strings.TrimPrefix(params[cut:], ","))
		params = params[:cut]

		u, err := url.Parse(ref)
		if err != nil {
			continue
		}
		abs := target.ResolveReference(u)
		if rel := BrokerPath(svc, abs); rel != "" && brokerBase != "" {
			out = append(out, "<"+strings.TrimSuffix(brokerBase, "/")+rel+">"+params)
			continue
		}
		if MatchBaseURL(svc, abs) != nil {
			continue
		}
		out = append(out, "<"+ref+">"+params)
	}
	return strings.Join(out, ", ")
}
