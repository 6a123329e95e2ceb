package egress

import (
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// AcceptEncoding is what the broker asks services for: only codings it can
// decode before scrubbing.
const AcceptEncoding = "gzip, deflate"

// DecodeBody returns the answer's body with every content coding undone,
// in the reverse of the order they were applied, reading every
// Content-Encoding line (a body labelled "identity, gzip" or with two
// header lines is gzip). A coding the broker cannot decode cannot be
// searched for the secret, so it is refused.
func DecodeBody(resp *http.Response) (io.Reader, error) {
	var codings []string
	for _, v := range resp.Header.Values("Content-Encoding") {
		for _, c := range strings.Split(v, ",") {
			c = strings.ToLower(strings.TrimSpace(c))
			if c != "" && c != "identity" {
				codings = append(codings, c)
			}
		}
	}
	var r io.Reader = resp.Body
	for i := len(codings) - 1; i >= 0; i-- {
		switch codings[i] {
		case "gzip", "x-gzip":
			gz, err := gzip.NewReader(r)
			if err != nil {
				return nil, &Error{Status: http.StatusBadGateway, Msg: "the service's gzip answer is corrupt", Permanent: false}
			}
			r = gz
		case "deflate":
			// RFC 9110's deflate is zlib; some servers send raw deflate.
			r = &lazyDeflate{src: r}
		default:
			return nil, &Error{Status: http.StatusBadGateway, Permanent: true, Msg: fmt.Sprintf(
				"the service answered with a %s-encoded body, which the broker cannot check for the credential", Truncate(codings[i], 32))}
		}
	}
	return r, nil
}

// lazyDeflate reads zlib, or raw deflate when the stream has no zlib
// header.
type lazyDeflate struct {
	src io.Reader
	r   io.Reader
}

func (l *lazyDeflate) Read(p []byte) (int, error) {
	if l.r == nil {
		var head [2]byte
		n, err := io.ReadFull(l.src, head[:])
		if err != nil && n == 0 {
			return 0, err
		}
		all := io.MultiReader(strings.NewReader(string(head[:n])), l.src)
		if n == 2 && (uint16(head[0])<<8|uint16(head[1]))%31 == 0 && head[0]&0x0f == 8 {
			zr, err := zlib.NewReader(all)
			if err != nil {
				return 0, err
			}
			l.r = zr
		} else {
			l.r = flate.NewReader(all)
		}
	}
	return l.r.Read(p)
}
