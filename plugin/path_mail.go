package credentials

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
	mailsubmit "github.com/clankteam/credentials/plugin/mail"
)

// mail/<name> sends one message with an SMTP credential (type password,
// service smtp). The engine submits it itself: the password never leaves
// the plugin, and the message is small enough for a Vault request.

const (
	smtpService    = "smtp"
	mailPathPrefix = "mail/"

	maxAllowedSenders = 50
)

func pathMail(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "mail/" + credNameSegment("name") + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "credentials",
			OperationVerb:   "send",
			OperationSuffix: "mail",
		},
		Fields: map[string]*framework.FieldSchema{
			"name":     {Type: framework.TypeString, Description: "The SMTP credential to send with. Example: vault write orgs/acme/mail/mailer ... (the name is in the path)", Required: true},
			"from":     {Type: framework.TypeString, Description: "Sender address, with an optional display name: 'Ops <ops@acme.example>'. Must be one of the credential's allowed_senders when it has any. Example: from='Ops <ops@acme.example>'", Required: true},
			"to":       {Type: framework.TypeCommaStringSlice, Description: "Recipients, comma-separated or a JSON list. Example: to=oncall@acme.example,lead@acme.example"},
			"cc":       {Type: framework.TypeCommaStringSlice, Description: "Copy recipients, as to. Example: cc=lead@acme.example"},
			"bcc":      {Type: framework.TypeCommaStringSlice, Description: "Blind copy recipients, as to; in the envelope only, never in a header. Example: bcc=audit@acme.example"},
			"reply_to": {Type: framework.TypeCommaStringSlice, Description: "Reply-To addresses, as to. Example: reply_to=support@acme.example"},
			"subject":  {Type: framework.TypeString, Description: "Subject line: one line, at most 998 bytes, UTF-8. Example: subject='Disk full'"},
			"text":     {Type: framework.TypeString, Description: "Plain-text body. text or html (or both) is required. Example: text='db-1 at 91%'"},
			"html":     {Type: framework.TypeString, Description: "HTML body; with text, the message is multipart/alternative. Example: html='<p>db-1 at <b>91%</b></p>'"},
			"attachments": {
				Type:        framework.TypeSlice,
				Description: `Attachments: a JSON list of {"filename": "report.csv", "content": "<base64>", "content_type": "text/csv"} (content_type optional, guessed from the filename). From the CLI: attachments=@attachments.json. Bounded, with the rest of the message, by mail_max_bytes. Example: attachments=@attachments.json`,
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: b.useReadOperation(),
			logical.UpdateOperation: &framework.PathOperation{
				Callback: b.pathMailWrite,
				// Last use is recorded; forwarded like the broker.
				ForwardPerformanceStandby: true,
				Summary:                   "Send one message with the stored SMTP login.",
				Responses: map[int][]framework.Response{
					http.StatusOK: {{
						Description: "The submission's receipt.",
						Fields: map[string]*framework.FieldSchema{
							"message_id":    {Type: framework.TypeString, Description: "The Message-ID header the message was sent with."},
							"recipients":    {Type: framework.TypeInt, Description: "How many recipients the server accepted."},
							"server_answer": {Type: framework.TypeString, Description: "The server's answer to the message (often its queue id)."},
						},
					}},
				},
			},
		},
		HelpSynopsis:    pathMailHelpSyn,
		HelpDescription: pathMailHelpDesc,
	}}
}

func (b *backend) pathMailWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	name := d.Get("name").(string)
	if err := validateCredName(name); err != nil {
		return nil, err
	}
	cfg, err := b.brokerConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	msg, err := mailMessageFrom(d)
	if err != nil {
		return nil, err
	}
	prepared, err := mailsubmit.Prepare(msg, mailsubmit.Limits{MaxBytes: int(cfg.MailMaxBytes), MaxRecipients: cfg.MailMaxRecipients}, b.now())
	if err != nil {
		return nil, err
	}

	c, err := b.usableCredential(ctx, req, name)
	if err != nil {
		return nil, err
	}
	if c.Type != typePassword || c.Service != smtpService {
		return nil, userErrorf("credential %s is not an SMTP credential (type password, service smtp): call its service through proxy/%s", name, name)
	}
	if c.State == statusDisconnected {
		return nil, userErrorf("credential %s is disconnected: a person stores its login again in the portal", name)
	}
	if !senderAllowed(c.SMTP, prepared.Envelope.From) {
		return nil, userErrorf("from %s is not one of credential %s's allowed_senders (%s)", prepared.Envelope.From, name, strings.Join(c.SMTP.AllowedSenders, ", "))
	}

	if _, err := b.takeCalls(ctx, req.Storage, b.requesterOf(req, b.agentOf(req)), name, 1); err != nil {
		return nil, err
	}
	callCtx, cancel := context.WithTimeout(ctx, cfg.MailTimeout)
	defer cancel()
	started := time.Now()
	receipt, err := mailsubmit.Submit(callCtx, b.egress.guard.DialContext, b.smtpServerOf(c), smtpLoginOf(c), prepared)
	line := trailLine{At: started.UTC(), Ingress: "mail", Credential: name, DurationMS: msSince(started)}
	if err != nil {
		b.metrics.call("mail", 0)
		b.recordCall(req, line)
		return nil, mailFailure(c, err, cfg.MailTimeout)
	}
	line.Status = http.StatusOK
	b.recordCall(req, line)
	b.metrics.call("mail", http.StatusOK)
	b.lastUse.record(name, b.callerOf(req), b.now().UTC())
	b.logger.Info("mail sent", "name", name, "recipients", receipt.Recipients)
	return &logical.Response{Data: map[string]interface{}{
		"message_id":    receipt.MessageID,
		"recipients":    receipt.Recipients,
		"server_answer": scrubLogin(c, truncate(receipt.Answer, 256)),
	}}, nil
}

// mailMessageFrom reads the message fields; attachments are decoded from
// base64 here so a bad one is named.
func mailMessageFrom(d *framework.FieldData) (mailsubmit.Message, error) {
	m := mailsubmit.Message{
		From:    d.Get("from").(string),
		To:      d.Get("to").([]string),
		Cc:      d.Get("cc").([]string),
		Bcc:     d.Get("bcc").([]string),
		ReplyTo: d.Get("reply_to").([]string),
		Subject: d.Get("subject").(string),
		Text:    d.Get("text").(string),
		HTML:    d.Get("html").(string),
	}
	raw, _ := d.Get("attachments").([]interface{})
	for i, item := range raw {
		obj, ok := item.(map[string]interface{})
		if !ok {
			return m, userErrorf(`attachment %d must be an object {"filename": ..., "content": "<base64>"}`, i+1)
		}
		for k := range obj {
			if k != "filename" && k != "content" && k != "content_type" {
				return m, userErrorf("attachment %d: unknown field %q (filename, content, content_type)", i+1, k)
			}
		}
		filename, _ := obj["filename"].(string)
		content, _ := obj["content"].(string)
		ctype, _ := obj["content_type"].(string)
		data, err := base64.StdEncoding.DecodeString(content)
		if err != nil {
			return m, userErrorf("attachment %d: content must be base64 (standard encoding)", i+1)
		}
		m.Attachments = append(m.Attachments, mailsubmit.Attachment{Filename: filename, ContentType: ctype, Content: data})
	}
	return m, nil
}

// parseAllowedSenders checks a credential's allowed_senders: addresses or
// @domains, kept in lower case.
func parseAllowedSenders(in []string) ([]string, error) {
	var out []string
	for _, s := range in {
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" {
			continue
		}
		if domain, ok := strings.CutPrefix(s, "@"); ok {
			if !validHost(domain) {
				return nil, userErrorf("allowed_senders: %q is not a domain", s)
			}
		} else if a, err := mail.ParseAddress(s); err != nil || a.Address != s || a.Name != "" {
			return nil, userErrorf("allowed_senders: %q is not a bare address (name@domain) or a domain (@domain)", s)
		}
		out = append(out, s)
	}
	if len(out) > maxAllowedSenders {
		return nil, userErrorf("allowed_senders holds at most %d entries", maxAllowedSenders)
	}
	return out, nil
}

// senderAllowed says whether from may send with the credential.
func senderAllowed(s *smtpSettings, from string) bool {
	if s == nil || len(s.AllowedSenders) == 0 {
		return true
	}
	from = strings.ToLower(from)
	_, domain, _ := strings.Cut(from, "@")
	for _, a := range s.AllowedSenders {
		if a == from || a == "@"+domain {
			return true
		}
	}
	return false
}

func (b *backend) smtpServerOf(c *credential) mailsubmit.Server {
	srv := mailsubmit.Server{Host: c.Host, Port: c.Port, TLS: b.egress.tlsConfig()}
	if c.SMTP != nil {
		srv.Security = mailsubmit.Security(c.SMTP.Security)
	}
	return srv
}

func smtpLoginOf(c *credential) mailsubmit.Login {
	return mailsubmit.Login{Username: c.Username, Password: c.Password}
}

// scrubLogin removes the password (and its AUTH PLAIN form) from text a
// server sent, in case a server echoes what it was told.
func scrubLogin(c *credential, text string) string {
	plain := "\x00" + c.Username + "\x00" + c.Password
	s := egress.NewScrubber([][]byte{[]byte(c.Password), []byte(plain)})
	defer s.Zero()
	return s.String(text)
}

// mailFailure turns a failed submission into the caller's error (a
// *userError): what the server answered, at which step, never the
// password.
func mailFailure(c *credential, err error, timeout time.Duration) error {
	var se *mailsubmit.ServerError
	if errors.As(err, &se) {
		status := http.StatusBadGateway
		if se.Code >= 500 && !se.Auth {
			// The server refused the message itself (a recipient, the
			// size): the request is what must change.
			status = http.StatusBadRequest
		}
		return &userError{Status: status, Permanent: se.Permanent, Msg: "smtp " + scrubLogin(c, truncate(se.Error(), 512))}
	}
	addr := fmt.Sprintf("%s:%d", c.Host, c.Port)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &userError{Status: http.StatusGatewayTimeout, Msg: fmt.Sprintf("smtp: %s did not finish within mail_timeout (%s)", addr, timeout)}
	case errors.Is(err, egress.ErrPrivateTarget):
		return &userError{Status: http.StatusForbidden, Permanent: true, Msg: fmt.Sprintf("smtp: %s is a loopback, private or link-local address, which the operator has not allowed (%s)", c.Host, egress.PrivateTargetsEnv)}
	}
	return &userError{Status: http.StatusBadGateway, Msg: fmt.Sprintf("smtp: connecting to %s failed", addr)}
}

const pathMailHelpSyn = `Send one message with an SMTP credential.`

const pathMailHelpDesc = `
Submits one message with the credential's SMTP login (type password, service
smtp): STARTTLS or implicit TLS as the credential's security says, then AUTH
PLAIN or LOGIN; the password never travels unprotected and never leaves the
engine. The SMTP host is dialled through the same guard as every service:
loopback and private addresses only where the operator allows them.

Bounds, from config: mail_max_bytes (the whole message, attachments included;
default 4 MiB), mail_max_recipients (to, cc and bcc together; default 50) and
mail_timeout (default 30s). When the credential has allowed_senders, from must
be one of them. A refusal names the step and what the server answered.

Agents are given update on orgs/<org>/mail/<name>, as on proxy/<name>, and
read, which describes the credential (service, status) without any secret.

  vault write orgs/acme/mail/mailer from=ops@acme.example to=oncall@acme.example \
      subject="Disk almost full" text="db-1 is at 91%."
  vault write orgs/acme/mail/mailer from=ops@acme.example to=a@acme.example \
      subject=Report text="Attached." attachments=@attachments.json
`
