package contract

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"unicode/utf8"
)

// ApprovalHeader carries an approval's ID on the call it approves, at the
// edge; the Vault path takes the approval_id field.
const ApprovalHeader = "X-Credentials-Approval"

// MaxApprovalBody bounds the body of a call that needs approval: the edge
// reads it whole to bind the approval to it.
const MaxApprovalBody = 1 << 20

// ApprovalHash binds an approval to one call: SHA-256 over the method, the
// decoded path, the query in canonical form (keys sorted, each value as
// sent) and the body. A replay with other arguments has another hash.
func ApprovalHash(method, decodedPath, rawQuery string, body []byte) string {
	q, err := url.ParseQuery(rawQuery)
	canonical := q.Encode()
	if err != nil {
		canonical = "\x00raw:" + rawQuery
	}
	h := sha256.New()
	for _, part := range []string{"credentials approval v1", method, decodedPath, canonical} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// MaxApprovalPreview bounds the start of a held call's body kept for the
// person who decides.
const MaxApprovalPreview = 2048

// ApprovalPreview is the start of a body a person reads before approving:
// text as it is (cut at a whole character), nothing for anything else.
func ApprovalPreview(body []byte) string {
	p := body[:min(len(body), MaxApprovalPreview)]
	for len(p) > 0 && !utf8.Valid(p) {
		p = p[:len(p)-1]
	}
	if bytes.IndexByte(p, 0) >= 0 {
		return ""
	}
	return string(p)
}
