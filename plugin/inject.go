package credentials

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"
)

// secretMaterial is what a credential contributes to one request: the
// secret (an API key, password or access token) and, for basic auth, the
// user name.
type secretMaterial struct {
	user   string
	secret string
}

// injectionFor returns how the service wants credentials of type t; a
// service that does not say gets the common conventions: a bearer token in
// Authorization, or HTTP basic for a user name and password.
func injectionFor(svc *service, t string) injection {
	if inj, ok := svc.Injection[t]; ok {
		return inj
	}
	if t == typePassword {
		return injection{Style: injectBasic}
	}
	return injection{Style: injectHeader, Header: "Authorization", Format: "Bearer {secret}"}
}

// credentialMaterial produces the secret to inject for c: the key, the
// password, an OAuth access token (refreshed when due) or an access token
// minted from a GCP service-account key.
func (b *backend) credentialMaterial(ctx context.Context, s logical.Storage, svc *service, c *credential) (secretMaterial, error) {
	switch c.Type {
	case typeAPIKey:
		return secretMaterial{secret: c.APIKey}, nil
	case typePassword:
		return secretMaterial{user: c.Username, secret: c.Password}, nil
	case typeOAuth2:
		if c.State == statusDisconnected {
			return secretMaterial{}, badRequest("credential %s is disconnected: connect it again", c.Name)
		}
		tok, err := b.accessTokenOf(ctx, s, c)
		if err != nil {
			return secretMaterial{}, tokenError(c.Name, err)
		}
		return secretMaterial{secret: tok}, nil
	case typeFile:
		if c.ServiceAccount == nil {
			return secretMaterial{}, badRequest("credential %s is a plain file; only GCP service-account keys can be used through the broker", c.Name)
		}
		var scopes []string
		if svc.OAuth != nil {
			scopes = svc.OAuth.DefaultScopes
		}
		if len(scopes) == 0 {
			scopes = builtinServices["gcp-service-account"].OAuth.DefaultScopes
		}
		tok, _, err := b.serviceAccountToken(ctx, c, scopes, "")
		if err != nil {
			return secretMaterial{}, tokenError(c.Name, err)
		}
		return secretMaterial{secret: tok}, nil
	}
	return secretMaterial{}, badRequest("credential %s has unknown type %q", c.Name, c.Type)
}

// tokenError reports a failure to obtain an access token. The underlying
// error names the credential and the provider's error code, never a token.
func tokenError(name string, err error) error {
	var be *brokerError
	if errors.As(err, &be) {
		return be
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &brokerError{status: http.StatusGatewayTimeout, msg: fmt.Sprintf("getting an access token for %s timed out", name)}
	}
	return &brokerError{status: http.StatusBadGateway, msg: fmt.Sprintf("no access token for %s: %v", name, err)}
}

// inject puts the secret into req as inj says, and adds the service's
// fixed headers (API versions) that the caller did not set.
func inject(req *http.Request, inj injection, m secretMaterial) error {
	switch inj.Style {
	case injectHeader:
		req.Header.Set(inj.Header, strings.ReplaceAll(inj.Format, "{secret}", m.secret))
	case injectBasic:
		if m.user != "" {
			req.SetBasicAuth(m.user, m.secret)
		} else {
			// An API key as the user name, empty password (Stripe's
			// convention for basic auth).
			req.SetBasicAuth(m.secret, "")
		}
	case injectQuery:
		q, err := url.ParseQuery(req.URL.RawQuery)
		if err != nil {
			return badRequest("the query cannot be parsed, so the credential cannot be added to it")
		}
		q.Set(inj.Query, m.secret)
		req.URL.RawQuery = q.Encode()
	default:
		return fmt.Errorf("unknown injection style %q", inj.Style)
	}
	for k, v := range inj.Headers {
		if req.Header.Get(k) == "" {
			req.Header.Set(k, v)
		}
	}
	return nil
}

// scrubForms returns the byte strings to remove from what the service sends
// back: the secret as sent and in the encodings an echo would use (URL and
// JSON escaping, base64 at every alignment, the basic-auth pair). Forms too
// short to be told from ordinary text are left out; the caller zeroes the
// result after use.
func scrubForms(inj injection, m secretMaterial) [][]byte {
	var plain []string
	if m.secret != "" {
		plain = append(plain, m.secret)
	}
	if inj.Style == injectBasic {
		user, pass := m.user, m.secret
		if user == "" {
			user, pass = m.secret, ""
		}
		plain = append(plain, user+":"+pass)
	}

	seen := map[string]bool{}
	var forms [][]byte
	add := func(b []byte) {
		if len(b) < minScrubLen || seen[string(b)] {
			clear(b)
			return
		}
		seen[string(b)] = true
		forms = append(forms, b)
	}
	for _, p := range plain {
		add([]byte(p))
		add([]byte(url.QueryEscape(p)))
		add([]byte(url.PathEscape(p)))
		add(jsonEscape(p))
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			for shift := 0; shift < 3; shift++ {
				add(base64Core(enc, []byte(p), shift))
			}
		}
	}
	// Longest first, so that a form containing another is removed whole.
	sortByLenDesc(forms)
	return forms
}

// minScrubLen is the shortest form scrubbed: shorter ones would match
// ordinary text and mangle responses.
const minScrubLen = 6

// base64Core returns the base64 characters determined by p alone when p
// starts shift bytes into a larger encoded stream; any base64 text that
// contains p at that alignment contains these characters.
func base64Core(enc *base64.Encoding, p []byte, shift int) []byte {
	buf := make([]byte, shift+len(p))
	copy(buf[shift:], p)
	full := make([]byte, enc.EncodedLen(len(buf)))
	enc.Encode(full, buf)
	clear(buf)
	// Character i covers bits [6i, 6i+6); p covers bits [8*shift, 8*(shift+n)).
	first := (8*shift + 5) / 6
	last := (8*(shift+len(p)))/6 - 1
	if last < first {
		clear(full)
		return nil
	}
	core := append([]byte(nil), full[first:last+1]...)
	clear(full)
	return core
}

// jsonEscape escapes p as encoding/json would inside a string.
func jsonEscape(p string) []byte {
	var sb strings.Builder
	for _, r := range p {
		switch {
		case r == '"' || r == '\\':
			sb.WriteByte('\\')
			sb.WriteRune(r)
		case r == '<' || r == '>' || r == '&' || r < ' ':
			fmt.Fprintf(&sb, `\u%04x`, r)
		default:
			sb.WriteRune(r)
		}
	}
	return []byte(sb.String())
}

func sortByLenDesc(forms [][]byte) {
	for i := 1; i < len(forms); i++ {
		for j := i; j > 0 && len(forms[j]) > len(forms[j-1]); j-- {
			forms[j], forms[j-1] = forms[j-1], forms[j]
		}
	}
}

// redactedMark replaces every scrubbed form; fallbackMark when a form is
// part of redactedMark itself (a secret such as "REDACTED"), since
// replacing it would then leave it in place. fallbackMark is shorter than
// any form.
var (
	redactedMark = []byte("[REDACTED]")
	fallbackMark = []byte("***")
)

func markFor(forms [][]byte) []byte {
	for _, f := range forms {
		if bytes.Contains(redactedMark, f) {
			return fallbackMark
		}
	}
	return redactedMark
}

// scrub returns b with every form replaced by the mark, and whether
// anything was replaced. When something was, b's old bytes are zeroed. A
// replacement can, with a secret that overlaps the mark, form a new
// occurrence; passes repeat until none is left, and a body that will not
// come clean is replaced whole (fail closed).
func scrub(b []byte, forms [][]byte) ([]byte, bool) {
	mark := markFor(forms)
	changed := false
	for pass := 0; ; pass++ {
		found := false
		for _, f := range forms {
			if len(f) == 0 || len(b) < len(f) || !bytes.Contains(b, f) {
				continue
			}
			if pass == maxScrubPasses {
				clear(b)
				return append([]byte(nil), mark...), true
			}
			next := bytes.ReplaceAll(b, f, mark)
			clear(b)
			b = next
			found, changed = true, true
		}
		if !found {
			return b, changed
		}
	}
}

// maxScrubPasses bounds the passes of scrub; ordinary secrets need one.
const maxScrubPasses = 4

func scrubString(s string, forms [][]byte) string {
	out, changed := scrub([]byte(s), forms)
	if !changed {
		return s
	}
	return string(out)
}

// zeroForms clears the scrub forms once the response is out.
func zeroForms(forms [][]byte) {
	for _, f := range forms {
		clear(f)
	}
}
