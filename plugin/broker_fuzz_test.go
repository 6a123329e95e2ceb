package credentials

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The broker's parsing of what callers send: path, query and headers. Run
// one with `go test ./plugin -run '^$' -fuzz FuzzBrokerTarget`; the seed
// corpus is in testdata/fuzz.

var fuzzService = &service{
	Name:     "fz",
	Types:    []string{typeAPIKey},
	BaseURLs: []string{"https://api.example.com/v1", "https://*.example.org", "http://127.0.0.1:8080/base"},
}

func FuzzBrokerTarget(f *testing.F) {
	for _, s := range []string{"/x", "/v1/../admin", "https://a.example.org/p?q=1", "/%2e%2e/x", "//evil", "https://api.example.com/v1x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		target, err := resolveTarget(fuzzService, raw)
		if err != nil {
			var be *brokerError
			if !errors.As(err, &be) || be.status != http.StatusBadRequest {
				t.Fatalf("refusal is not a 400 brokerError: %v", err)
			}
			return
		}
		base := matchBaseURL(fuzzService, target)
		if base == nil {
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
			if seg == "." || seg == ".." {
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
		in := map[string][]string{
			name:            {value},
			"Connection":    {connection},
			"Authorization": {"Bearer " + vaultTokenLike},
			"X-Vault-Token": {vaultTokenLike},
		}
		inj := injection{Style: injectHeader, Header: "X-Api-Key", Format: "{secret}", Headers: map[string]string{"Api-Version": "1"}}
		out, err := outboundHeaders(in, inj)
		if err != nil {
			var be *brokerError
			if !errors.As(err, &be) || be.status != http.StatusBadRequest {
				t.Fatalf("refusal is not a 400 brokerError: %v", err)
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
				if vaultTokenPattern.MatchString(v) {
					t.Fatalf("a Vault token survived in %s", k)
				}
			}
		}
		req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/v1/x", nil)
		req.Header = out
		if err := inject(req, inj, secretMaterial{secret: brokerKey}); err != nil {
			t.Fatal(err)
		}
		if got := req.Header.Values("X-Api-Key"); len(got) != 1 || got[0] != brokerKey {
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
		target, err := resolveTarget(fuzzService, raw)
		if err != nil {
			return
		}
		req := &http.Request{Method: http.MethodGet, URL: target, Header: http.Header{}}
		host := target.Host
		if err := inject(req, injection{Style: injectQuery, Query: "key"}, secretMaterial{secret: brokerKey}); err != nil {
			return
		}
		q, err := url.ParseQuery(req.URL.RawQuery)
		if err != nil {
			t.Fatalf("query after injection does not parse: %v", err)
		}
		if got := q["key"]; len(got) != 1 || got[0] != brokerKey {
			t.Fatalf("key = %q after injection into %q", got, raw)
		}
		if req.URL.Host != host {
			t.Fatalf("injection changed the host")
		}
	})
}

func FuzzScrub(f *testing.F) {
	f.Add("sk_live_abcdef123456", "token=", "; done")
	f.Add("D]zzzzzz", "[REDACTE", "zzzzzzzzzzzz")
	f.Add("p@ss w/rd+&=", "x", "")
	f.Fuzz(func(t *testing.T, secret, prefix, suffix string) {
		if secret == "" {
			return
		}
		body := []byte(prefix + secret + suffix + " " + base64.StdEncoding.EncodeToString([]byte(prefix+secret+suffix)) +
			" " + url.QueryEscape(secret))
		inj := injection{Style: injectHeader, Header: "Authorization", Format: "Bearer {secret}"}
		forms := scrubForms(inj, secretMaterial{secret: secret})
		orig := append([]byte(nil), body...)
		out, changed := scrub(body, forms)
		for _, form := range forms {
			if bytes.Contains(out, form) {
				t.Fatalf("form %q survived in %q", form, out)
			}
		}
		if !changed && !bytes.Equal(out, orig) {
			t.Fatalf("unchanged body was altered")
		}
		if len(secret) >= minScrubLen && bytes.Contains(out, []byte(secret)) {
			t.Fatalf("secret survived")
		}
	})
}
