package egress

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"testing"
)

func gzipped(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return b.Bytes()
}

// TestDecodeBodyReadsEveryLabel: a gzip body however it is labelled is
// decoded, so the scrubber sees the text; an unknown coding is refused.
func TestDecodeBodyReadsEveryLabel(t *testing.T) {
	for name, h := range map[string]http.Header{
		"gzip":                 {"Content-Encoding": {"gzip"}},
		"identity, gzip":       {"Content-Encoding": {"identity, gzip"}},
		"two lines":            {"Content-Encoding": {"identity", "gzip"}},
		"upper case x-gzip":    {"Content-Encoding": {"X-GZIP"}},
		"double gzip, labeled": {"Content-Encoding": {"gzip, gzip"}},
	} {
		body := gzipped("echo " + canary)
		if name == "double gzip, labeled" {
			body = gzipped(string(body))
		}
		r, err := DecodeBody(&http.Response{Header: h, Body: io.NopCloser(bytes.NewReader(body))})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out, _ := io.ReadAll(r)
		if got := canaryScrubber().String(string(out)); got != "echo [REDACTED]" {
			t.Errorf("%s: %q", name, got)
		}
	}
	for _, ce := range []string{"br", "zstd", "gzip, br", "compress"} {
		_, err := DecodeBody(&http.Response{Header: http.Header{"Content-Encoding": {ce}}, Body: io.NopCloser(strings.NewReader("x"))})
		if e, ok := err.(*Error); !ok || e.Status != http.StatusBadGateway {
			t.Errorf("%s: %v, want a 502 refusal", ce, err)
		}
	}
}
