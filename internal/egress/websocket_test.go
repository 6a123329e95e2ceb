package egress

import (
	"bytes"
	"strings"
	"testing"
)

// The service's frames come out with the secret scrubbed from data and
// close payloads, lengths rewritten for every length encoding; control
// frames otherwise, and the order, are kept; a masked or extension frame
// from the service ends the relay.
func TestScrubFrames(t *testing.T) {
	const secret = "sk-frame-secret-0123456789abcdef"
	s := NewScrubber([][]byte{[]byte(secret)})
	var in bytes.Buffer
	messages := []string{"short " + secret, strings.Repeat("m", 300) + secret, strings.Repeat("x", 70000) + secret}
	for _, m := range messages {
		_ = writeFrame(&in, true, 1, []byte(m))
	}
	_ = writeFrame(&in, true, 9, []byte("ping"))
	var out bytes.Buffer
	if err := ScrubFrames(&out, &in, s); err != nil {
		t.Fatal(err)
	}
	for i, m := range messages {
		fin, op, payload := readTestFrame(t, &out)
		want := strings.ReplaceAll(m, secret, "")
		if !fin || op != 1 || strings.Contains(string(payload), secret) || !strings.HasPrefix(string(payload), want) {
			t.Fatalf("frame %d: fin %t op %d, %d bytes, secret left %t", i, fin, op, len(payload), strings.Contains(string(payload), secret))
		}
	}
	if _, op, payload := readTestFrame(t, &out); op != 9 || string(payload) != "ping" {
		t.Fatalf("the ping came out as op %d %q", op, payload)
	}

	masked := bytes.NewBuffer([]byte{0x81, 0x80 | 1, 1, 2, 3, 4, 'x'})
	if err := ScrubFrames(&out, masked, s); err == nil || !strings.Contains(err.Error(), "masked") {
		t.Errorf("a masked frame from the service: %v", err)
	}
	rsv := bytes.NewBuffer([]byte{0xC1, 1, 'x'})
	if err := ScrubFrames(&out, rsv, s); err == nil || !strings.Contains(err.Error(), "extension") {
		t.Errorf("a compressed frame: %v", err)
	}
}

func readTestFrame(t *testing.T, r *bytes.Buffer) (bool, byte, []byte) {
	t.Helper()
	h := r.Next(2)
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		b := r.Next(2)
		n = int(b[0])<<8 | int(b[1])
	case 127:
		b := r.Next(8)
		n = 0
		for _, c := range b {
			n = n<<8 | int(c)
		}
	}
	return h[0]&0x80 != 0, h[0] & 0x0f, r.Next(n)
}
