package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Security is how the connection to the server is protected. The password
// never travels in the clear, so there is no plain mode.
type Security string

const (
	// StartTLS connects in the clear and upgrades before AUTH (port 587).
	StartTLS Security = "starttls"
	// ImplicitTLS speaks TLS from the first byte (port 465).
	ImplicitTLS Security = "tls"
)

// DefaultSecurity is implicit TLS on port 465 and STARTTLS elsewhere, as
// RFC 8314 describes the two submission ports.
func DefaultSecurity(port int) Security {
	if port == 465 {
		return ImplicitTLS
	}
	return StartTLS
}

// ParseSecurity accepts "starttls", "tls" and "" (the port's default).
func ParseSecurity(s string) (Security, bool) {
	switch Security(s) {
	case "", StartTLS, ImplicitTLS:
		return Security(s), true
	}
	return "", false
}

// Server is where messages are submitted.
type Server struct {
	Host     string
	Port     int
	Security Security
	// TLS is the client TLS configuration; its ServerName is set to Host.
	TLS *tls.Config
}

// Login is the stored SMTP login.
type Login struct {
	Username string
	Password string
}

// Dialer opens the TCP connection: the egress guard's DialContext.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// ServerError is the server's refusal, as it answered (code and text),
// with the stage it refused at. The engine scrubs it of the login before
// anyone sees it.
type ServerError struct {
	Stage string
	Code  int
	Text  string
	// Permanent is a 5xx answer: sending again will not help.
	Permanent bool
	// Auth is a refusal of the login itself.
	Auth bool
}

func (e *ServerError) Error() string {
	if e.Code == 0 {
		return fmt.Sprintf("%s: %s", e.Stage, e.Text)
	}
	return fmt.Sprintf("%s: the server answered %d %s", e.Stage, e.Code, e.Text)
}

// Receipt is what a submission returns.
type Receipt struct {
	MessageID  string
	Recipients int
	// Answer is the server's answer to the message data (often a queue id).
	Answer string
}

// Check connects, protects the connection and logs in, then quits: it
// proves the login works without sending anything.
func Check(ctx context.Context, dial Dialer, srv Server, login Login) error {
	c, err := open(ctx, dial, srv, login)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.Quit()
	return nil
}

// Submit sends one prepared message.
func Submit(ctx context.Context, dial Dialer, srv Server, login Login, p *Prepared) (*Receipt, error) {
	c, err := open(ctx, dial, srv, login)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Mail(p.Envelope.From, nil); err != nil {
		return nil, serverError("MAIL FROM", err)
	}
	for _, to := range p.Envelope.To {
		if err := c.Rcpt(to, nil); err != nil {
			return nil, serverError("RCPT TO "+to, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return nil, serverError("DATA", err)
	}
	if _, err := w.Write(p.Data); err != nil {
		return nil, serverError("DATA", err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return nil, serverError("DATA", err)
	}
	_ = c.Quit()
	r := &Receipt{MessageID: p.MessageID, Recipients: len(p.Envelope.To)}
	if resp != nil {
		r.Answer = resp.StatusText
	}
	return r, nil
}

// open dials through the guard, protects the connection, checks that the
// server offers AUTH over it, and logs in with PLAIN or LOGIN.
func open(ctx context.Context, dial Dialer, srv Server, login Login) (*smtp.Client, error) {
	addr := net.JoinHostPort(srv.Host, strconv.Itoa(srv.Port))
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// The deadline bounds the whole conversation, since go-smtp has no
	// context of its own.
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if srv.TLS != nil {
		tlsCfg = srv.TLS.Clone()
	}
	tlsCfg.ServerName = srv.Host

	var c *smtp.Client
	sec := srv.Security
	if sec == "" {
		sec = DefaultSecurity(srv.Port)
	}
	switch sec {
	case ImplicitTLS:
		tc := tls.Client(conn, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, &ServerError{Stage: "TLS", Text: tlsText(err)}
		}
		c = smtp.NewClient(tc)
	default:
		c, err = smtp.NewClientStartTLS(conn, tlsCfg)
		if err != nil {
			conn.Close()
			var se *smtp.SMTPError
			if errors.As(err, &se) {
				return nil, serverError("STARTTLS", err)
			}
			if strings.Contains(err.Error(), "STARTTLS") {
				return nil, &ServerError{Stage: "STARTTLS", Text: "the server does not offer STARTTLS; the password is never sent unprotected (use security=tls for a port that speaks TLS at once)", Permanent: true}
			}
			return nil, &ServerError{Stage: "STARTTLS", Text: tlsText(err)}
		}
	}
	var auth sasl.Client
	switch {
	case c.SupportsAuth("PLAIN"):
		auth = sasl.NewPlainClient("", login.Username, login.Password)
	case c.SupportsAuth("LOGIN"):
		auth = sasl.NewLoginClient(login.Username, login.Password)
	default:
		c.Close()
		return nil, &ServerError{Stage: "AUTH", Text: "the server offers neither AUTH PLAIN nor AUTH LOGIN", Permanent: true}
	}
	if err := c.Auth(auth); err != nil {
		c.Close()
		se := serverError("AUTH", err)
		se.Auth = se.Code == 535 || se.Code == 534 || se.Code == 530
		return nil, se
	}
	return c, nil
}

func serverError(stage string, err error) *ServerError {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return &ServerError{Stage: stage, Code: se.Code, Text: se.Message, Permanent: se.Code >= 500}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &ServerError{Stage: stage, Text: "the server did not answer in time"}
	}
	return &ServerError{Stage: stage, Text: "the connection failed: " + err.Error()}
}

// tlsText says why a TLS handshake failed, without Go's wrapping.
func tlsText(err error) string {
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return "the server's certificate is not trusted: " + ce.Err.Error()
	}
	return "the TLS handshake failed: " + err.Error()
}
