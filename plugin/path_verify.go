package credentials

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	mailsubmit "github.com/clankteam/credentials/plugin/mail"
)

func pathVerify(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "creds/" + credNameSegment("name") + "/verify$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "credentials",
			OperationVerb:   "verify",
			OperationSuffix: "cred",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {
				Type:        framework.TypeString,
				Description: "The credential to verify. Example: vault write -f orgs/acme/creds/stripe-live/verify (the name is in the path)",
				Required:    true,
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback: b.pathVerifyWrite,
				// A provider may be called: on a performance standby, Vault
				// forwards this to the node that can store the answer.
				ForwardPerformanceStandby: true,
				Summary:                   "Call the service's verify endpoint with the credential and record the outcome in its status.",
			},
		},
		HelpSynopsis:    pathVerifyHelpSyn,
		HelpDescription: pathVerifyHelpDesc,
	}}
}

func (b *backend) pathVerifyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateCredName(name); err != nil {
		return nil, err
	}
	data, err := b.verifyCredential(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: data}, nil
}

// verifyCredential makes the verify call of credential name (an SMTP
// login for an SMTP credential) and records the outcome and the time in
// it: the verify path's work, and the health checks'.
func (b *backend) verifyCredential(ctx context.Context, s logical.Storage, name string) (map[string]interface{}, error) {
	c, err := getCredential(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, userErrorf("credential %q does not exist", name)
	}
	defer zeroCredentialFile(c)
	svc, err := b.brokerService(ctx, s, c.Service)
	if err != nil {
		return nil, err
	}
	if svc == nil {
		return nil, userErrorf("service %q of credential %q no longer exists", c.Service, name)
	}
	if c.Type == typePassword && c.Service == smtpService {
		return b.verifySMTP(ctx, s, c)
	}
	v := svc.Verify
	if v == nil {
		return nil, userErrorf("service %s has no verify call; add one to a custom service with verify={...}", svc.Name)
	}
	if c.State == statusDisconnected {
		return nil, userErrorf("credential %q is disconnected: connect it again, then verify", name)
	}
	cfg, err := b.brokerConfig(ctx, s)
	if err != nil {
		return nil, err
	}

	call := brokerRequest{method: v.Method, path: v.URL}
	if v.Body != "" {
		call.body = []byte(v.Body)
		call.header = map[string][]string{"Content-Type": {"application/json"}}
	}
	// No lock is held during the call: getting an OAuth token may refresh
	// and store the credential under its own lock.
	out, err := b.brokerCall(ctx, s, cfg, svc, c, call)
	if err != nil {
		var be *userError
		if errors.As(err, &be) && be.Status != http.StatusBadRequest {
			// The service could not be reached (or no token obtained): that
			// says nothing about the credential, so its status stays.
			b.markChecked(ctx, s, name)
			return nil, logical.CodedError(be.Status, "verify: "+be.Msg)
		}
		return nil, err
	}
	defer clear(out.body)

	failure := verifyFailure(svc, v, out)
	state, reason, err := b.recordVerify(ctx, s, name, failure)
	if err != nil || state == "" {
		if err == nil {
			return nil, userErrorf("credential %q was deleted during verify", name)
		}
		return nil, err
	}
	b.logger.Info("credential verified", "name", name, "ok", failure == "", "upstream_status", out.status)
	return map[string]interface{}{
		"verified":        failure == "",
		"upstream_status": out.status,
		"status":          state,
		"status_reason":   reason,
	}, nil
}

const verifyFailedPrefix = "verify failed: "

// verifySMTP connects to the credential's SMTP server and logs in, sending
// nothing: a refused login needs attention; a server that cannot be
// reached leaves the status as it was.
func (b *backend) verifySMTP(ctx context.Context, s logical.Storage, c *credential) (map[string]interface{}, error) {
	if c.State == statusDisconnected {
		return nil, userErrorf("credential %q is disconnected: store its login again, then verify", c.Name)
	}
	cfg, err := b.brokerConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	callCtx, cancel := context.WithTimeout(ctx, cfg.MailTimeout)
	defer cancel()
	failure := ""
	if err := mailsubmit.Check(callCtx, b.egress.guard.DialContext, b.smtpServerOf(c), smtpLoginOf(c)); err != nil {
		var se *mailsubmit.ServerError
		if !errors.As(err, &se) || !(se.Auth || se.Permanent) {
			b.markChecked(ctx, s, c.Name)
			return nil, mailFailure(c, err, cfg.MailTimeout)
		}
		failure = verifyFailedPrefix + "smtp " + scrubLogin(c, truncate(se.Error(), 256))
	}
	state, reason, err := b.recordVerify(ctx, s, c.Name, failure)
	if err != nil || state == "" {
		if err == nil {
			return nil, userErrorf("credential %q was deleted during verify", c.Name)
		}
		return nil, err
	}
	b.logger.Info("credential verified", "name", c.Name, "ok", failure == "")
	return map[string]interface{}{
		"verified":      failure == "",
		"status":        state,
		"status_reason": reason,
	}, nil
}

// verifyFailure says why the answer shows the credential does not work;
// empty when it works.
func verifyFailure(svc *service, v *verifyCall, out *brokerResponse) string {
	host := v.URL
	if u, err := url.Parse(v.URL); err == nil {
		host = u.Host
	}
	if out.status != v.ExpectStatus {
		return fmt.Sprintf(verifyFailedPrefix+"%s answered %d, expected %d", host, out.status, v.ExpectStatus)
	}
	if svc.OAuth != nil && svc.OAuth.OKField {
		// Slack answers 200 with {"ok": false, "error": "invalid_auth"}.
		var body struct {
			OK    *bool  `json:"ok"`
			Error string `json:"error"`
		}
		if json.Unmarshal(out.body, &body) == nil && body.OK != nil && !*body.OK {
			return fmt.Sprintf(verifyFailedPrefix+"%s answered ok=false (%s)", host, truncate(sanitizeCode(body.Error), 64))
		}
	}
	return ""
}

// sanitizeCode keeps an error code printable and short, since it is shown.
func sanitizeCode(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return -1
		}
		return r
	}, s)
}

// markChecked notes that name was checked now although its service could
// not be reached, so the health checks try it again at its next time, not
// at once.
func (b *backend) markChecked(ctx context.Context, s logical.Storage, name string) {
	lock := b.credLock(name)
	lock.Lock()
	defer lock.Unlock()
	c, err := getCredential(ctx, s, name)
	if err != nil || c == nil {
		return
	}
	defer zeroCredentialFile(c)
	c.CheckedAt = b.now().UTC()
	if err := b.saveCredential(ctx, s, c); err != nil {
		b.logger.Warn("recording a check", "name", name, "error", err)
	}
}

// recordVerify stores the outcome and the time: a failure makes the credential need
// attention with the reason; a success clears an earlier failure. It
// returns the status and reason the credential has now, or an empty status
// when the credential is gone.
func (b *backend) recordVerify(ctx context.Context, s logical.Storage, name, failure string) (string, string, error) {
	lock := b.credLock(name)
	lock.Lock()
	defer lock.Unlock()
	c, err := getCredential(ctx, s, name)
	if err != nil || c == nil {
		return "", "", err
	}
	defer zeroCredentialFile(c)
	c.CheckedAt = b.now().UTC()
	switch {
	case c.State == statusDisconnected:
		// Disconnected meanwhile: that decision stands.
	case failure != "":
		c.State, c.StateReason = statusNeedsAttention, failure
	case c.State == statusNeedsAttention && strings.HasPrefix(c.StateReason, verifyFailedPrefix):
		// Only a failure verify recorded is cleared by verify; others
		// (a refresh that failed) have their own cure.
		c.State, c.StateReason = statusActive, ""
	}
	if err := b.saveCredential(ctx, s, c); err != nil {
		return "", "", err
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return "", "", err
	}
	sum := c.Summary()
	st, reason := sum.Status(b.now(), cfg.WarnBefore)
	return st, reason, nil
}

const pathVerifyHelpSyn = `Check that a credential works by calling its service.`

const pathVerifyHelpDesc = `
Makes the service's verify call (from its catalog entry: method, URL under its
base_urls, expected status) with the credential injected exactly as the broker
would, and records the outcome: a credential the service refuses needs
attention, with the answer as the reason; a credential that works again
becomes active. A service that cannot be reached leaves the status as it was
and the call fails with 502 or 504. For an SMTP credential, verify connects,
protects the connection and logs in, and sends nothing.

  vault write -f orgs/acme/creds/stripe-live/verify
`
