// Package smtpserver is a real SMTP submission server for tests, on
// github.com/emersion/go-smtp: STARTTLS or implicit TLS with a certificate
// from the test CA, AUTH PLAIN and LOGIN against one login, and every
// accepted message kept for the test to read.
package smtpserver

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one accepted message.
type Message struct {
	From string
	To   []string
	Data []byte
	// Username is the login it was sent with.
	Username string
}

// Options configure a server.
type Options struct {
	Username, Password string
	TLS                *tls.Config
	// Implicit speaks TLS from the first byte instead of STARTTLS.
	Implicit bool
	// LoginOnly offers AUTH LOGIN but not PLAIN.
	LoginOnly bool
	// MaxMessageBytes is announced with SIZE and enforced (default 10 MiB).
	MaxMessageBytes int64
	// OnMessage, when set, is called with each accepted message.
	OnMessage func(Message)
}

// Server is a running test server.
type Server struct {
	Host string
	Port int

	opts Options
	srv  *smtp.Server
	ln   net.Listener

	mu       sync.Mutex
	messages []Message
	// authFailures counts refused logins.
	authFailures int
}

// Start listens on 127.0.0.1 at a free port.
func Start(opts Options) (*Server, error) {
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = 10 << 20
	}
	s := &Server{opts: opts}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{s: s}, nil
	}))
	srv.Domain = "localhost"
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = 100
	srv.TLSConfig = opts.TLS
	srv.AllowInsecureAuth = false
	var ln net.Listener
	var err error
	if opts.Implicit {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", opts.TLS)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return nil, err
	}
	if opts.Implicit {
		// go-smtp treats a TLS listener's connections as protected.
		srv.AllowInsecureAuth = true
	}
	s.srv, s.ln = srv, ln
	s.Host = "127.0.0.1"
	s.Port = ln.Addr().(*net.TCPAddr).Port
	go func() { _ = srv.Serve(ln) }()
	return s, nil
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

// Messages are the messages accepted so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// AuthFailures counts the logins refused so far.
func (s *Server) AuthFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authFailures
}

type session struct {
	s        *Server
	username string
	from     string
	to       []string
}

var errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}

func (ss *session) AuthMechanisms() []string {
	if ss.s.opts.LoginOnly {
		return []string{sasl.Login}
	}
	return []string{sasl.Plain, sasl.Login}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	check := func(username, password string) error {
		if username != ss.s.opts.Username || password != ss.s.opts.Password {
			ss.s.mu.Lock()
			ss.s.authFailures++
			ss.s.mu.Unlock()
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Username and Password not accepted"}
		}
		ss.username = username
		return nil
	}
	switch mech {
	case sasl.Plain:
		if ss.s.opts.LoginOnly {
			return nil, errors.New("unsupported mechanism")
		}
		return sasl.NewPlainServer(func(_, username, password string) error { return check(username, password) }), nil
	case sasl.Login:
		return newLoginServer(check), nil
	}
	return nil, errors.New("unsupported mechanism")
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.username == "" {
		return errAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if ss.username == "" {
		return errAuthRequired
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := Message{From: ss.from, To: ss.to, Data: b, Username: ss.username}
	ss.s.mu.Lock()
	ss.s.messages = append(ss.s.messages, m)
	ss.s.mu.Unlock()
	if ss.s.opts.OnMessage != nil {
		ss.s.opts.OnMessage(m)
	}
	return nil
}

func (ss *session) Reset() { ss.from, ss.to = "", nil }

func (ss *session) Logout() error { return nil }

// loginServer is the server side of AUTH LOGIN (go-sasl has only the
// client): it asks for the username, then the password.
type loginServer struct {
	check    func(username, password string) error
	step     int
	username string
}

func newLoginServer(check func(username, password string) error) sasl.Server {
	return &loginServer{check: check}
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		l.step = 1
		if len(response) > 0 {
			l.username = string(response)
			l.step = 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.username = string(response)
		l.step = 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.username, string(response))
	}
}
