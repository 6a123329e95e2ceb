// Package mail submits one message with a stored SMTP login: it builds the
// message (RFC 5322 with MIME parts), checks it against the mount's bounds
// and submits it over STARTTLS or implicit TLS with AUTH. It dials through
// the caller's dialer, which is the egress guard, so an SMTP host is held
// to the same rules as every other target.
package mail

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"path"
	"strings"
	"time"
	"unicode/utf8"
)

// Message is one message as an agent asks for it.
type Message struct {
	From        string
	To          []string
	Cc          []string
	Bcc         []string
	ReplyTo     []string
	Subject     string
	Text        string
	HTML        string
	Attachments []Attachment
}

// Attachment is one attached file.
type Attachment struct {
	Filename    string
	ContentType string
	Content     []byte
}

// Limits bound one message.
type Limits struct {
	// MaxBytes bounds the composed message, attachments included.
	MaxBytes int
	// MaxRecipients bounds to, cc and bcc together.
	MaxRecipients int
}

// Error is a refusal of the message itself, before any server is asked;
// its text says what is wrong and holds no secret.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

func refuse(format string, args ...any) *Error { return &Error{Msg: fmt.Sprintf(format, args...)} }

const maxSubjectLen = 998

// Envelope is what the server is told: the sender and every recipient.
type Envelope struct {
	From string
	To   []string
}

// Prepared is a message checked and composed, ready to submit.
type Prepared struct {
	Envelope Envelope
	Data     []byte
	// MessageID is the Message-ID header's value, for the receipt.
	MessageID string
}

// Prepare checks m against the limits and composes it. Addresses are
// parsed as RFC 5322 addresses (a display name is allowed); the envelope
// carries the bare addresses.
func Prepare(m Message, l Limits, now time.Time) (*Prepared, error) {
	from, err := parseOne("from", m.From)
	if err != nil {
		return nil, err
	}
	to, err := parseList("to", m.To)
	if err != nil {
		return nil, err
	}
	cc, err := parseList("cc", m.Cc)
	if err != nil {
		return nil, err
	}
	bcc, err := parseList("bcc", m.Bcc)
	if err != nil {
		return nil, err
	}
	replyTo, err := parseList("reply_to", m.ReplyTo)
	if err != nil {
		return nil, err
	}
	n := len(to) + len(cc) + len(bcc)
	if n == 0 {
		return nil, refuse("at least one recipient (to, cc or bcc) is required")
	}
	if l.MaxRecipients > 0 && n > l.MaxRecipients {
		return nil, refuse("%d recipients is more than the %d this mount allows (mail_max_recipients)", n, l.MaxRecipients)
	}
	if len(m.Subject) > maxSubjectLen || strings.ContainsAny(m.Subject, "\r\n") || !utf8.ValidString(m.Subject) {
		return nil, refuse("subject must be one line of at most %d bytes of UTF-8", maxSubjectLen)
	}
	if m.Text == "" && m.HTML == "" {
		return nil, refuse("text or html is required")
	}
	if !utf8.ValidString(m.Text) || !utf8.ValidString(m.HTML) {
		return nil, refuse("text and html must be UTF-8")
	}
	for i, a := range m.Attachments {
		if a.Filename == "" || len(a.Filename) > 255 || strings.ContainsAny(a.Filename, "\r\n\"\\/") || !utf8.ValidString(a.Filename) {
			return nil, refuse(`attachment %d: filename must be 1-255 characters without quotes, slashes or line breaks`, i+1)
		}
		if a.ContentType != "" {
			if _, _, err := mime.ParseMediaType(a.ContentType); err != nil {
				return nil, refuse("attachment %d: content_type %q is not a media type", i+1, a.ContentType)
			}
		}
	}

	id := messageID(from.Address)
	var buf bytes.Buffer
	h := textproto.MIMEHeader{}
	h.Set("From", from.String())
	h.Set("To", joinAddrs(to))
	if len(cc) > 0 {
		h.Set("Cc", joinAddrs(cc))
	}
	if len(replyTo) > 0 {
		h.Set("Reply-To", joinAddrs(replyTo))
	}
	h.Set("Subject", mime.QEncoding.Encode("utf-8", m.Subject))
	h.Set("Date", now.Format(time.RFC1123Z))
	h.Set("Message-ID", id)
	h.Set("MIME-Version", "1.0")
	if len(to) == 0 {
		h.Del("To")
	}
	if err := writeBody(&buf, h, m); err != nil {
		return nil, err
	}
	if l.MaxBytes > 0 && buf.Len() > l.MaxBytes {
		return nil, refuse("the message is %d bytes, more than the %d this mount allows (mail_max_bytes)", buf.Len(), l.MaxBytes)
	}
	env := Envelope{From: from.Address}
	for _, list := range [][]*mail.Address{to, cc, bcc} {
		for _, a := range list {
			env.To = append(env.To, a.Address)
		}
	}
	return &Prepared{Envelope: env, Data: buf.Bytes(), MessageID: id}, nil
}

func parseOne(field, s string) (*mail.Address, error) {
	if s == "" {
		return nil, refuse("%s is required", field)
	}
	a, err := mail.ParseAddress(s)
	if err != nil || strings.ContainsAny(s, "\r\n") {
		return nil, refuse("%s: %q is not an email address", field, s)
	}
	return a, nil
}

func parseList(field string, in []string) ([]*mail.Address, error) {
	var out []*mail.Address
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		a, err := parseOne(field, s)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func joinAddrs(as []*mail.Address) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func messageID(from string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	domain := "localhost"
	if _, d, ok := strings.Cut(from, "@"); ok && d != "" {
		domain = d
	}
	return "<" + hex.EncodeToString(b) + "@" + domain + ">"
}

// writeBody writes the headers and the body: one text part, or
// multipart/alternative for text and html, inside multipart/mixed when
// there are attachments.
func writeBody(buf *bytes.Buffer, h textproto.MIMEHeader, m Message) error {
	if len(m.Attachments) == 0 && (m.Text == "" || m.HTML == "") {
		ct, body := "text/plain; charset=utf-8", m.Text
		if m.Text == "" {
			ct, body = "text/html; charset=utf-8", m.HTML
		}
		h.Set("Content-Type", ct)
		h.Set("Content-Transfer-Encoding", "quoted-printable")
		writeHeader(buf, h)
		return writeQPTo(buf, body)
	}
	mixed := len(m.Attachments) > 0
	top := multipart.NewWriter(buf)
	if mixed {
		h.Set("Content-Type", "multipart/mixed; boundary="+top.Boundary())
	} else {
		h.Set("Content-Type", "multipart/alternative; boundary="+top.Boundary())
	}
	writeHeader(buf, h)
	if mixed && m.Text != "" && m.HTML != "" {
		alt := &bytes.Buffer{}
		aw := multipart.NewWriter(alt)
		if err := writeTextParts(aw, m); err != nil {
			return err
		}
		if err := aw.Close(); err != nil {
			return err
		}
		w, err := top.CreatePart(textproto.MIMEHeader{"Content-Type": {"multipart/alternative; boundary=" + aw.Boundary()}})
		if err != nil {
			return err
		}
		if _, err := w.Write(alt.Bytes()); err != nil {
			return err
		}
	} else if err := writeTextParts(top, m); err != nil {
		return err
	}
	for _, a := range m.Attachments {
		ct := a.ContentType
		if ct == "" {
			ct = mime.TypeByExtension(path.Ext(a.Filename))
		}
		if ct == "" {
			ct = "application/octet-stream"
		}
		w, err := top.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {ct},
			"Content-Transfer-Encoding": {"base64"},
			"Content-Disposition":       {mime.FormatMediaType("attachment", map[string]string{"filename": a.Filename})},
		})
		if err != nil {
			return err
		}
		if err := writeBase64Lines(w, a.Content); err != nil {
			return err
		}
	}
	return top.Close()
}

func writeTextParts(w *multipart.Writer, m Message) error {
	for _, p := range []struct{ ct, body string }{{"text/plain; charset=utf-8", m.Text}, {"text/html; charset=utf-8", m.HTML}} {
		if p.body == "" {
			continue
		}
		pw, err := w.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {p.ct},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return err
		}
		if err := writeQPTo(pw, p.body); err != nil {
			return err
		}
	}
	return nil
}

// headerOrder keeps the headers in the order people read them.
var headerOrder = []string{"From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"}

func writeHeader(buf *bytes.Buffer, h textproto.MIMEHeader) {
	for _, k := range headerOrder {
		if v := h.Get(k); v != "" {
			fmt.Fprintf(buf, "%s: %s\r\n", k, v)
		}
	}
	buf.WriteString("\r\n")
}

func writeQPTo(w io.Writer, s string) error {
	qw := quotedprintable.NewWriter(w)
	if _, err := qw.Write([]byte(s)); err != nil {
		return err
	}
	return qw.Close()
}

// writeBase64Lines writes b base64-encoded in lines of 76 characters, as
// RFC 2045 asks.
func writeBase64Lines(w io.Writer, b []byte) error {
	enc := base64.StdEncoding.EncodeToString(b)
	for len(enc) > 76 {
		if _, err := w.Write([]byte(enc[:76] + "\r\n")); err != nil {
			return err
		}
		enc = enc[76:]
	}
	_, err := w.Write([]byte(enc + "\r\n"))
	return err
}
