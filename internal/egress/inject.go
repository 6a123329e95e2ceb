package egress

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Injection styles: how a secret is put into a request.
const (
	StyleHeader = "header" // a header, value from Format with {secret}
	StyleBasic  = "basic"  // HTTP basic; an API key alone is the user name
	StyleQuery  = "query"  // a query parameter
	StyleBody   = "body"   // a top-level field of a JSON or form body
)

// Injection says how a credential goes into a request. Nothing in it is
// secret.
type Injection struct {
	Style  string `json:"style"`
	Header string `json:"header,omitempty"`
	// Format is the header value; {secret} is replaced by the secret.
	Format string `json:"format,omitempty"`
	Query  string `json:"query,omitempty"`
	// Field is the body field of style body.
	Field string `json:"field,omitempty"`
	// User is basic auth's user name for an API key that goes as the
	// password (Mailgun's "api"); empty: the key is the user name.
	User string `json:"user,omitempty"`
	// Headers are added when the caller did not set them (API versions).
	Headers map[string]string `json:"headers,omitempty"`
}

// Material is what a credential contributes to one request: the secret (an
// API key, password or access token) and, for basic auth, the user name.
// Byte slices, so that the holder can zero them after the call.
type Material struct {
	User   []byte `json:"user,omitempty"`
	Secret []byte `json:"secret"`
}

// Zero clears the material's bytes.
func (m *Material) Zero() {
	clear(m.User)
	clear(m.Secret)
}

// Inject puts m into req as inj says, and adds the service's fixed headers
// that the caller did not set.
func Inject(req *http.Request, inj Injection, m Material) error {
	switch inj.Style {
	case StyleHeader:
		req.Header.Set(inj.Header, strings.ReplaceAll(inj.Format, "{secret}", string(m.Secret)))
	case StyleBasic:
		if len(m.User) > 0 {
			req.SetBasicAuth(string(m.User), string(m.Secret))
		} else if inj.User != "" {
			req.SetBasicAuth(inj.User, string(m.Secret))
		} else {
			// An API key as the user name, empty password (Stripe's
			// convention for basic auth).
			req.SetBasicAuth(string(m.Secret), "")
		}
	case StyleQuery:
		q, err := url.ParseQuery(req.URL.RawQuery)
		if err != nil {
			return BadRequest("the query cannot be parsed, so the credential cannot be added to it")
		}
		q.Set(inj.Query, string(m.Secret))
		req.URL.RawQuery = q.Encode()
	case StyleBody:
		if err := injectBody(req, inj.Field, m.Secret); err != nil {
			return err
		}
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

// Plaintexts are the byte strings the service might echo back of m as
// injected: the secret, and for basic auth the user:password pair. The
// caller zeroes them.
func Plaintexts(inj Injection, m Material) [][]byte {
	var out [][]byte
	if len(m.Secret) > 0 {
		out = append(out, append([]byte(nil), m.Secret...))
	}
	if inj.Style == StyleBasic {
		var pair []byte
		if len(m.User) > 0 {
			pair = append(append(append(pair, m.User...), ':'), m.Secret...)
		} else if inj.User != "" {
			pair = append(append(append(pair, inj.User...), ':'), m.Secret...)
		} else {
			pair = append(append(pair, m.Secret...), ':')
		}
		out = append(out, pair)
	}
	return out
}
