package credentials

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/testing/smtpserver"
	"github.com/clankteam/credentials/testing/tlsca"
)

const smtpCanary = "smtp-pw-CANARY-4417"

// startSMTP starts a submission server that trusts one login, and makes
// the backend trust its CA.
func startSMTP(t *testing.T, b *backend, opts smtpserver.Options) *smtpserver.Server {
	t.Helper()
	ca, err := tlsca.New()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ca.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	opts.TLS = cfg
	if opts.Username == "" {
		opts.Username, opts.Password = "bot@acme.example", smtpCanary
	}
	srv, err := smtpserver.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	b.egress.roots = ca.Pool()
	return srv
}

func storeMailer(t *testing.T, b *backend, s logical.Storage, srv *smtpserver.Server, extra map[string]interface{}) {
	t.Helper()
	data := map[string]interface{}{
		"type": "password", "service": "smtp", "username": "bot@acme.example", "password": smtpCanary,
		"host": srv.Host, "port": srv.Port,
	}
	for k, v := range extra {
		data[k] = v
	}
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/mailer", data))
}

func TestMailSendsOneMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts smtpserver.Options
		sec  string
	}{
		{"starttls plain", smtpserver.Options{}, "starttls"},
		{"starttls login only", smtpserver.Options{LoginOnly: true}, "starttls"},
		{"implicit tls", smtpserver.Options{Implicit: true}, "tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, s, _ := getTestBackend(t)
			srv := startSMTP(t, b, tc.opts)
			storeMailer(t, b, s, srv, map[string]interface{}{"security": tc.sec})

			attachment := []byte("id,total\n1,42\n")
			resp := mustOK(t, do(t, b, s, logical.UpdateOperation, "mail/mailer", map[string]interface{}{
				"from": "Ops <ops@acme.example>", "to": "oncall@acme.example, lead@acme.example", "cc": "audit@acme.example",
				"bcc": "archive@acme.example", "reply_to": "noreply@acme.example",
				"subject": "Disk almost full — db-1", "text": "db-1 is at 91%.", "html": "<p>db-1 is at <b>91%</b>.</p>",
				"attachments": `[{"filename": "report.csv", "content": "` + base64.StdEncoding.EncodeToString(attachment) + `"}]`,
			}))
			if resp.Data["recipients"] != 4 {
				t.Fatalf("recipients = %v, want 4", resp.Data["recipients"])
			}
			msgs := srv.Messages()
			if len(msgs) != 1 {
				t.Fatalf("server got %d messages, want 1", len(msgs))
			}
			got := msgs[0]
			if got.From != "ops@acme.example" || strings.Join(got.To, ",") != "oncall@acme.example,lead@acme.example,audit@acme.example,archive@acme.example" {
				t.Fatalf("envelope: from %q to %v", got.From, got.To)
			}
			m, err := mail.ReadMessage(bytes.NewReader(got.Data))
			if err != nil {
				t.Fatal(err)
			}
			dec := new(mime.WordDecoder)
			subject, _ := dec.DecodeHeader(m.Header.Get("Subject"))
			for h, want := range map[string]string{
				"From": `"Ops" <ops@acme.example>`, "To": "<oncall@acme.example>, <lead@acme.example>",
				"Cc": "<audit@acme.example>", "Reply-To": "<noreply@acme.example>", "Message-Id": resp.Data["message_id"].(string),
			} {
				if m.Header.Get(h) != want {
					t.Errorf("%s = %q, want %q", h, m.Header.Get(h), want)
				}
			}
			if subject != "Disk almost full — db-1" {
				t.Errorf("Subject = %q", subject)
			}
			if m.Header.Get("Bcc") != "" || bytes.Contains(got.Data, []byte("archive@")) {
				t.Error("the Bcc recipient shows in the message")
			}
			parts := readParts(t, m.Header.Get("Content-Type"), m.Body)
			if parts["text/plain"] != "db-1 is at 91%." || parts["text/html"] != "<p>db-1 is at <b>91%</b>.</p>" || parts["text/csv"] != string(attachment) {
				t.Errorf("parts = %q", parts)
			}
			if bytes.Contains(got.Data, []byte(smtpCanary)) {
				t.Fatal("the password is in the message")
			}
			read := mustOK(t, do(t, b, s, logical.ReadOperation, "creds/mailer", nil))
			if read.Data["last_used_at"] == "" || read.Data["last_used_at"] == nil {
				t.Errorf("last use not recorded: %v", read.Data["last_used_at"])
			}
		})
	}
}

// readParts flattens a MIME body into content type -> decoded content.
func readParts(t *testing.T, contentType string, body io.Reader) map[string]string {
	t.Helper()
	out := map[string]string{}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(mt, "multipart/") {
		b, _ := io.ReadAll(body)
		out[mt] = string(b)
		return out
	}
	r := multipart.NewReader(body, params["boundary"])
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		ct := p.Header.Get("Content-Type")
		if strings.HasPrefix(ct, "multipart/") {
			for k, v := range readParts(t, ct, p) {
				out[k] = v
			}
			continue
		}
		b, _ := io.ReadAll(p)
		if p.Header.Get("Content-Transfer-Encoding") == "base64" {
			b, _ = base64.StdEncoding.DecodeString(strings.ReplaceAll(string(b), "\r\n", ""))
		}
		mt, _, _ := mime.ParseMediaType(ct)
		out[mt] = string(b)
	}
}

func TestMailRefusals(t *testing.T) {
	b, s, _ := getTestBackend(t)
	srv := startSMTP(t, b, smtpserver.Options{})
	storeMailer(t, b, s, srv, map[string]interface{}{"allowed_senders": "ops@acme.example,@alerts.acme.example"})
	mustOK(t, do(t, b, s, logical.CreateOperation, "creds/stripe", map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": "sk_test_123"}))
	mustOK(t, do(t, b, s, logical.UpdateOperation, "config", map[string]interface{}{"mail_max_recipients": 3, "mail_max_bytes": 2048}))

	base := func(extra map[string]interface{}) map[string]interface{} {
		d := map[string]interface{}{"from": "ops@acme.example", "to": "a@acme.example", "subject": "s", "text": "t"}
		for k, v := range extra {
			d[k] = v
		}
		return d
	}
	for _, tc := range []struct {
		name, path string
		data       map[string]interface{}
		want       string
	}{
		{"sender not allowed", "mail/mailer", base(map[string]interface{}{"from": "ceo@acme.example"}), "is not one of credential mailer's allowed_senders"},
		{"no recipient", "mail/mailer", base(map[string]interface{}{"to": ""}), "at least one recipient"},
		{"bad address", "mail/mailer", base(map[string]interface{}{"to": "not an address"}), `to: "not an address" is not an email address`},
		{"header injection in subject", "mail/mailer", base(map[string]interface{}{"subject": "hi\r\nBcc: x@evil.example"}), "subject must be one line"},
		{"header injection in from", "mail/mailer", base(map[string]interface{}{"from": "ops@acme.example\r\nBcc: x@evil.example"}), "is not an email address"},
		{"too many recipients", "mail/mailer", base(map[string]interface{}{"to": "a@x.example,b@x.example", "cc": "c@x.example,d@x.example"}), "4 recipients is more than the 3"},
		{"too big", "mail/mailer", base(map[string]interface{}{"text": strings.Repeat("x", 4096)}), "more than the 2048 this mount allows (mail_max_bytes)"},
		{"no body", "mail/mailer", base(map[string]interface{}{"text": ""}), "text or html is required"},
		{"bad attachment", "mail/mailer", base(map[string]interface{}{"attachments": `[{"filename": "a.txt", "content": "%%%"}]`}), "attachment 1: content must be base64"},
		{"attachment path", "mail/mailer", base(map[string]interface{}{"attachments": `[{"filename": "../a.txt", "content": "aGk="}]`}), "attachment 1: filename must be"},
		{"attachments not json", "mail/mailer", base(map[string]interface{}{"attachments": `nope`}), "attachments must be a JSON list"},
		{"unknown field", "mail/mailer", base(map[string]interface{}{"sender": "x"}), "unknown field(s): sender"},
		{"not smtp", "mail/stripe", base(nil), "is not an SMTP credential"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := doErr(b, s, logical.UpdateOperation, tc.path, tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", resp, tc.want)
			}
		})
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("server got %d messages from refused requests", n)
	}
	// An allowed domain sends.
	mustOK(t, do(t, b, s, logical.UpdateOperation, "mail/mailer", base(map[string]interface{}{"from": "pager@alerts.acme.example"})))
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("server got %d messages, want 1", n)
	}
}

func TestMailWrongPasswordAndVerify(t *testing.T) {
	b, s, _ := getTestBackend(t)
	srv := startSMTP(t, b, smtpserver.Options{})
	storeMailer(t, b, s, srv, nil)

	resp := mustOK(t, do(t, b, s, logical.UpdateOperation, "creds/mailer/verify", nil))
	if resp.Data["verified"] != true || resp.Data["status"] != statusActive {
		t.Fatalf("verify with the right password: %v", resp.Data)
	}
	if len(srv.Messages()) != 0 {
		t.Fatal("verify sent a message")
	}

	wrong := "wrong-pw-CANARY-9931"
	mustOK(t, do(t, b, s, logical.UpdateOperation, "creds/mailer", map[string]interface{}{"password": wrong}))
	resp = mustOK(t, do(t, b, s, logical.UpdateOperation, "creds/mailer/verify", nil))
	if resp.Data["verified"] != false || resp.Data["status"] != statusNeedsAttention ||
		!strings.Contains(resp.Data["status_reason"].(string), "535") {
		t.Fatalf("verify with a wrong password: %v", resp.Data)
	}
	_, err := doErr(b, s, logical.UpdateOperation, "mail/mailer", map[string]interface{}{"from": "ops@acme.example", "to": "a@acme.example", "text": "t"})
	if err == nil || !strings.Contains(err.Error(), "AUTH: the server answered 535") {
		t.Fatalf("send with a wrong password: %v", err)
	}
	for _, secret := range []string{wrong, smtpCanary} {
		if strings.Contains(fmt.Sprint(err, resp.Data), secret) {
			t.Fatal("an answer holds the password")
		}
	}
}

func TestMailDialGuard(t *testing.T) {
	b, s, _ := getTestBackend(t)
	srv := startSMTP(t, b, smtpserver.Options{})
	storeMailer(t, b, s, srv, nil)
	guard, err := egress.ParseGuard("")
	if err != nil {
		t.Fatal(err)
	}
	b.egress.guard = guard
	_, err = doErr(b, s, logical.UpdateOperation, "mail/mailer", map[string]interface{}{"from": "ops@acme.example", "to": "a@acme.example", "text": "t"})
	if err == nil || !strings.Contains(err.Error(), "loopback, private or link-local") {
		t.Fatalf("send to a loopback server without the operator's leave: %v", err)
	}
	if len(srv.Messages()) != 0 {
		t.Fatal("the message was sent")
	}
}

// TestMailNeverSendsThePasswordUnprotected: a server that offers no
// STARTTLS is refused before AUTH.
func TestMailNeverSendsThePasswordUnprotected(t *testing.T) {
	b, s, _ := getTestBackend(t)
	srv, err := smtpserver.Start(smtpserver.Options{Username: "bot@acme.example", Password: smtpCanary})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	storeMailer(t, b, s, srv, nil)
	_, err = doErr(b, s, logical.UpdateOperation, "mail/mailer", map[string]interface{}{"from": "ops@acme.example", "to": "a@acme.example", "text": "t"})
	if err == nil || !strings.Contains(err.Error(), "does not offer STARTTLS") {
		t.Fatalf("send to a server without STARTTLS: %v", err)
	}
	if srv.AuthFailures() != 0 || len(srv.Messages()) != 0 {
		t.Fatal("the login or the message reached the server")
	}
}
