package egress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// WebSockets (RFC 6455) through the broker: the upgrade is one call,
// authorized and injected like any other; then the service's frames are
// scrubbed on their way to the caller. The service's frames are not
// masked (only a client's are), so a data frame's payload is scrubbed and
// the frame written again with its new length. Compression
// (permessage-deflate) is not offered to the service: a compressed frame
// could not be scrubbed. A secret split across the fragments of one
// message is not seen; a fragment holding it whole is.

// MaxWebSocketFrame bounds one frame from the service.
const MaxWebSocketFrame = 16 << 20

// IsWebSocketUpgrade says whether r asks to switch to WebSocket.
func IsWebSocketUpgrade(h http.Header) bool {
	return strings.EqualFold(strings.TrimSpace(h.Get("Upgrade")), "websocket")
}

// PrepareWebSocket turns an Outgoing built by Prepare into the upgrade
// request: the hop-by-hop headers Check removed are set again, and no
// extension is offered, so frames stay plain.
func (o *Outgoing) PrepareWebSocket() {
	o.Request.Header.Set("Connection", "Upgrade")
	o.Request.Header.Set("Upgrade", "websocket")
	o.Request.Header.Del("Sec-Websocket-Extensions")
	o.Request.Header.Del("Accept-Encoding")
}

// SendWebSocket sends the upgrade and returns the service's switched
// connection and its answer's headers, scrubbed. A service that does not
// switch gets an error saying what it answered.
func (o *Outgoing) SendWebSocket(client *http.Client) (io.ReadWriteCloser, http.Header, error) {
	resp, err := client.Do(o.Request)
	if err != nil {
		return nil, nil, SendError(o.Request.Context(), o.target, 0, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body.Close()
		return nil, nil, &Error{Status: http.StatusBadGateway, Msg: fmt.Sprintf("the service answered the WebSocket upgrade with HTTP %d", resp.StatusCode)}
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, nil, &Error{Status: http.StatusBadGateway, Msg: "the service's switched connection cannot be written"}
	}
	if resp.Header.Get("Sec-Websocket-Extensions") != "" {
		rwc.Close()
		return nil, nil, &Error{Status: http.StatusBadGateway, Msg: "the service chose a WebSocket extension it was not offered"}
	}
	h := AnswerHeaders(resp.Header, o.Scrubber)
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", "websocket")
	return rwc, h, nil
}

// ScrubFrames copies the service's frames from src to dst, each data
// frame's payload scrubbed by s, until src ends or a frame is malformed.
func ScrubFrames(dst io.Writer, src io.Reader, s *Scrubber) error {
	var head [14]byte
	for {
		if _, err := io.ReadFull(src, head[:2]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		fin, opcode, masked := head[0]&0x80 != 0, head[0]&0x0f, head[1]&0x80 != 0
		if head[0]&0x70 != 0 {
			return errors.New("a WebSocket frame with extension bits, which no extension was agreed for")
		}
		n := uint64(head[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(src, head[2:4]); err != nil {
				return err
			}
			n = uint64(binary.BigEndian.Uint16(head[2:4]))
		case 127:
			if _, err := io.ReadFull(src, head[2:10]); err != nil {
				return err
			}
			n = binary.BigEndian.Uint64(head[2:10])
		}
		if masked {
			return errors.New("a masked WebSocket frame from the service")
		}
		if n > MaxWebSocketFrame {
			return fmt.Errorf("a WebSocket frame over %d bytes", MaxWebSocketFrame)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(src, payload); err != nil {
			return err
		}
		out := payload
		if opcode <= 2 || opcode == 8 { // continuation, text, binary, close (its reason)
			out, _ = s.Bytes(payload)
		}
		if err := writeFrame(dst, fin, opcode, out); err != nil {
			return err
		}
		clear(payload)
	}
}

func writeFrame(w io.Writer, fin bool, opcode byte, payload []byte) error {
	var head [10]byte
	head[0] = opcode
	if fin {
		head[0] |= 0x80
	}
	n := len(payload)
	size := 2
	switch {
	case n < 126:
		head[1] = byte(n)
	case n <= 0xffff:
		head[1] = 126
		binary.BigEndian.PutUint16(head[2:4], uint16(n))
		size = 4
	default:
		head[1] = 127
		binary.BigEndian.PutUint64(head[2:10], uint64(n))
		size = 10
	}
	buf := make([]byte, 0, size+n)
	buf = append(append(buf, head[:size]...), payload...)
	_, err := w.Write(buf)
	return err
}
