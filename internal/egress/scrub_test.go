package egress

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html"
	"io"
	"net/url"
	"strings"
	"testing"
)

const canary = "sk_live_CANARY/x+y=z0123456789"

func canaryScrubber() *Scrubber {
	return NewScrubber(Plaintexts(Injection{Style: StyleHeader}, Material{Secret: []byte(canary)}))
}

// jsonSlashes is how PHP and some Java encoders write '/'.
func jsonSlashes(s string) string { return strings.ReplaceAll(s, "/", `\/`) }

// jsonString is s as a JSON string with its quotes, '/' written `\/`: what
// an encoder that escapes slashes does to text that is itself JSON.
func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range []byte(s) {
		switch c {
		case '"', '\\', '/':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

func allUnicodeEscaped(s string, upper bool) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if upper {
			fmt.Fprintf(&b, `\u%04X`, c)
		} else {
			fmt.Fprintf(&b, `\u%04x`, c)
		}
	}
	return b.String()
}

func percentAll(s string, upper bool) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if upper {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}

func entities(s string, hexForm bool) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if hexForm {
			fmt.Fprintf(&b, "&#x%x;", c)
		} else {
			fmt.Fprintf(&b, "&#%d;", c)
		}
	}
	return b.String()
}

// TestScrubEncodings is the list of echoes that got through before: each
// must come out without the secret in any form.
func TestScrubEncodings(t *testing.T) {
	s := canaryScrubber()
	cases := map[string]string{
		"plain":                      canary,
		"json slash escapes":         `{"key":"` + jsonSlashes(canary) + `"}`,
		"json unicode escapes lower": allUnicodeEscaped(canary, false),
		"json unicode escapes upper": allUnicodeEscaped(canary, true),
		"mixed escapes":              "sk_live_CANARY\\/x%2By&#61;z0123456789",
		"percent upper":              url.QueryEscape(canary),
		"percent lower":              lowerEscapes(url.QueryEscape(canary)),
		"percent every byte upper":   percentAll(canary, true),
		"percent every byte lower":   percentAll(canary, false),
		"html entities named":        html.EscapeString("a" + canary + "&"),
		"html entities decimal":      entities(canary, false),
		"html entities hex":          entities(canary, true),
		"hex lower":                  hex.EncodeToString([]byte(canary)),
		"hex upper":                  strings.ToUpper(hex.EncodeToString([]byte(canary))),
		"base64 std":                 base64.StdEncoding.EncodeToString([]byte(canary)),
		"base64 url":                 base64.URLEncoding.EncodeToString([]byte(canary)),
		"base64 shifted by one":      base64.StdEncoding.EncodeToString([]byte("x" + canary)),
		"base64 shifted by two":      base64.RawStdEncoding.EncodeToString([]byte("xy" + canary + "tail")),
		"base64 std in json slashes": jsonSlashes(base64.StdEncoding.EncodeToString([]byte("ab" + canary))),
		"basic pair":                 base64.StdEncoding.EncodeToString([]byte(canary + ":")),
		// A JSON string holding JSON: each escape of the inner text is
		// escaped again by the outer one.
		"json in json slashes":   jsonString(`{"key":"` + jsonSlashes(canary) + `"}`),
		"json in json unicode":   jsonString(allUnicodeEscaped(canary, false)),
		"json in json quoted":    jsonString(jsonString(canary)),
		"json in a query string": url.QueryEscape(`{"key":"` + jsonSlashes(canary) + `"}`),
		"json in json, base64":   jsonString(jsonSlashes(base64.StdEncoding.EncodeToString([]byte(canary)))),
	}
	for name, echo := range cases {
		t.Run(name, func(t *testing.T) {
			out := s.String("before " + echo + " after")
			if strings.Contains(out, canary) || out == "before "+echo+" after" {
				t.Fatalf("echo survived: %q", out)
			}
			if !strings.HasPrefix(out, "before ") || !strings.HasSuffix(out, " after") {
				t.Fatalf("text around the echo was damaged: %q", out)
			}
		})
	}
}

func TestScrubLeavesOrdinaryTextAlone(t *testing.T) {
	s := canaryScrubber()
	for _, text := range []string{
		"", "hello", `{"data":[1,2,3],"next":"/v1/charges?starting_after=ch_1"}`,
		"sk_live_CANARY/x+y=z012345678", // one character short
		`\u00`, "%", "&#", "&amp;&lt;", strings.Repeat("a", 100000),
	} {
		if out := s.String(text); out != text {
			t.Errorf("%.40q was changed to %.40q", text, out)
		}
	}
}

// TestScrubStreamsWithoutDelay: the writer holds back only what may begin
// the secret, so each server-sent event passes as soon as it is written.
func TestScrubStreamsWithoutDelay(t *testing.T) {
	s := canaryScrubber()
	var out bytes.Buffer
	w := s.NewWriter(&out)
	event := "data: {\"delta\":\"hello\"}\n\n"
	for i := 0; i < 5; i++ {
		_, _ = w.Write([]byte(event))
		if got := out.Len(); got != (i+1)*len(event) {
			t.Fatalf("after event %d, %d bytes passed, want %d", i, got, (i+1)*len(event))
		}
	}
	// A prefix of the secret is held until it is decided...
	_, _ = w.Write([]byte("data: sk_live_CAN"))
	if strings.Contains(out.String(), "sk_live") {
		t.Fatalf("a possible start of the secret passed early")
	}
	// ...and its completion is scrubbed across the write boundary.
	_, _ = w.Write([]byte("ARY/x+y=z0123456789 done\n\n"))
	_ = w.Close()
	if strings.Contains(out.String(), canary) || !strings.Contains(out.String(), "[REDACTED] done") {
		t.Fatalf("split secret: %q", out.String())
	}
}

// TestScrubWriterByteByByte feeds every echo one byte at a time.
func TestScrubWriterByteByByte(t *testing.T) {
	s := canaryScrubber()
	in := "x" + jsonSlashes(canary) + "y" + percentAll(canary, false) + "z" + jsonString(jsonString(canary)) + "w" + base64.StdEncoding.EncodeToString([]byte(canary))
	var out bytes.Buffer
	w := s.NewWriter(&out)
	for i := 0; i < len(in); i++ {
		_, _ = w.Write([]byte{in[i]})
	}
	_ = w.Close()
	if got, want := out.String(), `x[REDACTED]y[REDACTED]z"\"[REDACTED]\""w[REDACTED]`; !strings.HasPrefix(got, want) {
		t.Fatalf("got %q, want prefix %q", got, want)
	}
}

func TestScrubMarkCannotFormTheSecret(t *testing.T) {
	secret := "D]zzzzzz"
	s := NewScrubber([][]byte{[]byte(secret)})
	out := s.String("[REDACTE" + secret + "zzzzzz")
	if strings.Contains(out, secret) {
		t.Fatalf("mark and text formed the secret: %q", out)
	}
}

// BenchmarkScrubStream is the scrubber on a clean 1 MiB answer, the cost
// every byte of a streamed answer pays.
func BenchmarkScrubStream(b *testing.B) {
	s := canaryScrubber()
	body := []byte(strings.Repeat(`{"id":"ch_3Nabc","amount":1200,"currency":"usd","url":"\/v1\/x"}`+"\n", (1<<20)/65))
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		w := s.NewWriter(io.Discard)
		for i := 0; i < len(body); i += 32 << 10 {
			_, _ = w.Write(body[i:min(i+32<<10, len(body))])
		}
		_ = w.Close()
	}
}

// lowerEscapes writes the hex digits of %XX escapes in lower case, as
// some encoders do.
func lowerEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lowerASCII(b[i+1]), lowerASCII(b[i+2])
		}
	}
	return string(b)
}
