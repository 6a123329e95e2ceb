package egress

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The parsing of what callers send: path, query and headers, and the
// scrubber. Run one with `go test ./internal/egress -run '^$' -fuzz
// FuzzBrokerTarget`; the seed corpus is in testdata/fuzz.

const (
	fuzzKey        = "sk_test_FUZZkey0123456789abcdef"
	vaultTokenLike = "hvs.CAESIFAKEfakeFAKEfakeFAKEfake0123"
)

var fuzzService = Service{
	Name:     "fz",
	BaseURLs: []string{"https://api.example.com/v1", "https://*.example.org", "http://127.0.0.1:8080/base"},
}

func FuzzBrokerTarget(f *testing.F) {
	for _, s := range []string{"/x", "/v1/../admin", "https://a.example.org/p?q=1", "/%2e%2e/x", "//evil", "https://api.example.com/v1x", "/a/..;/b", "/%252e%252e/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		target, err := ResolveTarget(fuzzService, raw)
		if err != nil {
			var be *Error
			if !errors.As(err, &be) || be.Status != http.StatusBadRequest {
				t.Fatalf("refusal is not a 400 Error: %v", err)
			}
			return
		}
		if MatchBaseURL(fuzzService, target) == nil {
			t.Fatalf("%q resolved to %s, outside every base URL", raw, target)
		}
		if strings.HasPrefix(raw, "/") && target.Host != "api.example.com" {
			t.Fatalf("relative %q left the default base: %s", raw, target)
		}
		decoded, err := url.PathUnescape(target.EscapedPath())
		if err != nil {
			t.Fatalf("target path %q does not decode", target.EscapedPath())
		}
		for _, seg := range strings.Split(decoded, "/") {
			bare, _, _ := strings.Cut(seg, ";")
			if bare == "." || bare == ".." || strings.Contains(strings.ToLower(seg), "%2e") {
				t.Fatalf("%q resolved to a path with dot segments: %s", raw, target)
			}
		}
		if strings.ContainsAny(decoded, "\\\x00") || target.User != nil || target.Fragment != "" {
			t.Fatalf("%q resolved to %s", raw, target)
		}
		// What is sent is what was checked: the URL reparses to the same
		// origin and path.
		again, err := url.Parse(target.String())
		if err != nil || again.Host != target.Host || again.EscapedPath() != target.EscapedPath() || again.Scheme != target.Scheme {
			t.Fatalf("%s does not reparse to itself (%v)", target, err)
		}
	})
}

func FuzzBrokerHeaders(f *testing.F) {
	f.Add("X-Request-Id", "abc", "")
	f.Add("x-api-key", "hvs.AAAAAAAAAAAAAAAAAAAAAAAA", "keep-alive")
	f.Add("X-Custom", "1", "X-Custom, Upgrade")
	f.Add("Authorization", "Bearer x", "")
	f.Fuzz(func(t *testing.T, name, value, connection string) {
		in := http.Header{
			name:            {value},
			"Connection":    {connection},
			"Authorization": {"Bearer " + vaultTokenLike},
			"X-Vault-Token": {vaultTokenLike},
		}
		inj := Injection{Style: StyleHeader, Header: "X-Api-Key", Format: "{secret}", Headers: map[string]string{"Api-Version": "1"}}
		out, err := OutboundHeaders(in, inj, vaultTokenLike)
		if err != nil {
			var be *Error
			if !errors.As(err, &be) || be.Status != http.StatusBadRequest {
				t.Fatalf("refusal is not a 400 Error: %v", err)
			}
			return
		}
		for _, h := range append(append([]string{"X-Api-Key", "X-Vault-Token"}, hopByHopHeaders...), callerOnlyHeaders...) {
			if _, ok := out[h]; ok {
				t.Fatalf("%s survived: %v", h, out)
			}
		}
		for k, vs := range out {
			if k != http.CanonicalHeaderKey(k) || strings.HasPrefix(k, "X-Vault-") {
				t.Fatalf("header %q kept", k)
			}
			for _, v := range vs {
				if VaultTokenPattern.MatchString(v) || strings.Contains(v, vaultTokenLike) {
					t.Fatalf("a Vault token survived in %s", k)
				}
			}
		}
		req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/v1/x", nil)
		req.Header = out
		if err := Inject(req, inj, Material{Secret: []byte(fuzzKey)}); err != nil {
			t.Fatal(err)
		}
		if got := req.Header.Values("X-Api-Key"); len(got) != 1 || got[0] != fuzzKey {
			t.Fatalf("injected header = %q", got)
		}
	})
}

func FuzzBrokerQuery(f *testing.F) {
	f.Add("/x?key=mine&a=1")
	f.Add("/x?%zz")
	f.Add("/x?a=1;key=2")
	f.Add("/x?key&key=&KEY=3")
	f.Fuzz(func(t *testing.T, raw string) {
		target, err := ResolveTarget(fuzzService, raw)
		if err != nil {
			return
		}
		req := &http.Request{Method: http.MethodGet, URL: target, Header: http.Header{}}
		host := target.Host
		if err := Inject(req, Injection{Style: StyleQuery, Query: "key"}, Material{Secret: []byte(fuzzKey)}); err != nil {
			return
		}
		q, err := url.ParseQuery(req.URL.RawQuery)
		if err != nil {
			t.Fatalf("query after injection does not parse: %v", err)
		}
		if got := q["key"]; len(got) != 1 || got[0] != fuzzKey {
			t.Fatalf("key = %q after injection into %q", got, raw)
		}
		if req.URL.Host != host {
			t.Fatalf("injection changed the host")
		}
	})
}

// FuzzScrub plants the secret between arbitrary text, plain, in base64,
// percent-encoded and as a JSON string inside a JSON string, and checks that neither it nor any of its forms comes
// out, whether the text is scrubbed whole or streamed in pieces.
func FuzzScrub(f *testing.F) {
	f.Add("sk_live_abcdef123456", "token=", "; done", 3)
	f.Add("D]zzzzzz", "[REDACTE", "zzzzzzzzzzzz", 1)
	f.Add("p@ss w/rd+&=", "x", "", 7)
	f.Add(`pa\ss\\wo"rd/1`, "{", "}", 2)
	f.Fuzz(func(t *testing.T, secret, prefix, suffix string, chunk int) {
		if len(secret) < MinScrubLen {
			return
		}
		once, twice := jsonString(secret), jsonString(jsonString(secret))
		body := []byte(prefix + secret + suffix + " " + base64.StdEncoding.EncodeToString([]byte(prefix+secret+suffix)) +
			" " + url.QueryEscape(secret) + " " + once + " " + twice)
		s := NewScrubber(Plaintexts(Injection{Style: StyleHeader}, Material{Secret: []byte(secret)}))
		whole, _ := s.Bytes(append([]byte(nil), body...))
		var streamed bytes.Buffer
		w := s.NewWriter(&streamed)
		chunk = 1 + int(uint(chunk)%17)
		for i := 0; i < len(body); i += chunk {
			_, _ = w.Write(body[i:min(i+chunk, len(body))])
		}
		_ = w.Close()
		for name, out := range map[string][]byte{"whole": whole, "streamed": streamed.Bytes()} {
			for _, form := range s.forms {
				if bytes.Contains(out, form) {
					t.Fatalf("%s: form %q survived in %q", name, form, out)
				}
			}
			if bytes.Contains(out, []byte(secret)) {
				t.Fatalf("%s: secret survived", name)
			}
			for _, echo := range []string{once, twice} {
				if bytes.Contains(out, []byte(echo)) {
					t.Fatalf("%s: the secret escaped as JSON survived: %q", name, echo)
				}
			}
		}
		if !bytes.Equal(whole, streamed.Bytes()) {
			t.Fatalf("streamed %q differs from whole %q", streamed.Bytes(), whole)
		}
	})
}
