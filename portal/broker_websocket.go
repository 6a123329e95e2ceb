package portal

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/clankteam/credentials/internal/egress"
)

// WebSockets, on /broker/ and through the forward proxy alike: the
// upgrade is one call, authorized and injected like any other; then the
// frames are relayed, the service's scrubbed, as long as both sides keep
// the connection. Only WebSocket over HTTP/1.1 is taken (RFC 8441's
// HTTP/2 form is not).

// isWebSocketCall says r asks for a WebSocket this edge can take; a
// request asking for another upgrade gets the error.
func isWebSocketCall(r *http.Request) (bool, *egress.Error) {
	if r.Header.Get("Upgrade") == "" {
		return false, nil
	}
	if !egress.IsWebSocketUpgrade(r.Header) || r.ProtoMajor != 1 || r.Method != http.MethodGet {
		return false, &egress.Error{Status: http.StatusNotImplemented, Permanent: true,
			Msg: "of protocol upgrades, only WebSocket over HTTP/1.1 (a GET) is brokered"}
	}
	return true, nil
}

// webSocket upgrades an authorized call and relays its frames, the
// service's scrubbed, until either side ends the connection.
func (h *brokerHandler) webSocket(w http.ResponseWriter, r *http.Request, grant *egress.Grant, call *edgeCall, rawQuery string) int {
	// The connection lives as long as both sides keep it: its context
	// is not the request's, which ends once the handler has hijacked it.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	out, fail := h.prepare(ctx, grant, edgeRequest{call: call, method: r.Method, rawQuery: rawQuery, header: r.Header})
	if fail != nil {
		return brokerFail(w, fail)
	}
	defer out.Scrubber.Zero()
	out.PrepareWebSocket()
	service, header, err := out.SendWebSocket(h.upstream(grant.PrivateTargets))
	if err != nil {
		return brokerFail(w, asEgressError(err))
	}
	defer service.Close()
	conn, buf, fail := takeOver(w)
	if fail != nil {
		return fail.Status
	}
	defer conn.Close()
	_, _ = buf.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = header.Write(buf)
	_, _ = buf.WriteString("\r\n")
	if buf.Flush() != nil {
		return http.StatusSwitchingProtocols
	}
	// The caller's frames go as they are: they are its own data.
	err = relay(conn, buf.Reader, service, func(dst io.Writer, src io.Reader) error {
		return egress.ScrubFrames(dst, src, out.Scrubber)
	})
	if err != nil {
		h.logger.Debug("broker: a WebSocket ended", "cred", call.cred, "reason", err.Error())
	}
	return http.StatusSwitchingProtocols
}

// takeOver hijacks the caller's connection for a tunnel or an upgrade,
// with the proxy server's deadlines cleared: it lives as long as both
// sides keep it. A failure is answered to the caller.
func takeOver(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, *egress.Error) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		fail := &egress.Error{Status: http.StatusInternalServerError, Msg: "the proxy cannot take this connection over"}
		brokerFail(w, fail)
		return nil, nil, fail
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, buf, nil
}

// relay copies the caller's bytes (from caller, the hijacked connection's
// reader) to service as they are, and service's to conn through
// fromService, until both directions end. When the caller is done
// writing, service is half-closed where it can be (the rest of its
// answer still comes back), else closed.
func relay(conn net.Conn, caller io.Reader, service io.ReadWriteCloser, fromService func(dst io.Writer, src io.Reader) error) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(service, caller)
		if hc, ok := service.(interface{ CloseWrite() error }); ok {
			_ = hc.CloseWrite()
			return
		}
		service.Close()
	}()
	err := fromService(conn, service)
	conn.Close()
	<-done
	return err
}
