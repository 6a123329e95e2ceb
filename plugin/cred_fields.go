package credentials

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	mailsubmit "github.com/clankteam/credentials/plugin/mail"
)

// The checks a write to creds/<name> goes through, field by field, before
// anything is stored.

// applyCredFields copies the request's fields into c after checking each;
// it returns the message for the caller when a field is wrong, and then c
// must not be stored. Replacing a secret makes the credential active again.
func (b *backend) applyCredFields(ctx context.Context, req *logical.Request, d *framework.FieldData, svc *service, c *credential, creating bool) string {
	allowed := map[string][]string{
		typeAPIKey:   {"api_key"},
		typePassword: {"username", "password", "host", "port", "security", "allowed_senders"},
		typeFile:     {"file", "filename", "app_id", "installation_id", "repositories", "permissions"},
		typeOAuth2:   {"app", "refresh_token"},
	}
	for typ, fields := range allowed {
		if typ == c.Type {
			continue
		}
		for _, f := range fields {
			if _, ok := req.Data[f]; ok && !slices.Contains(allowed[c.Type], f) {
				return fmt.Sprintf("%s is not a field of %s credentials", f, c.Type)
			}
		}
	}

	if v, ok := d.GetOk("description"); ok {
		desc := v.(string)
		if len(desc) > maxDescLen || hasControl(desc) {
			return fmt.Sprintf("description must be at most %d characters without control characters", maxDescLen)
		}
		c.Description = desc
	}
	if v, ok := d.GetOk("expires_at"); ok {
		raw := v.(string)
		if raw == "" {
			c.ExpiresAt = nil
		} else {
			t, err := time.Parse(time.RFC3339, raw)
			if err != nil {
				return "expires_at must be an RFC 3339 time such as 2027-01-31T00:00:00Z"
			}
			t = t.UTC()
			c.ExpiresAt = &t
		}
	}

	secretChanged := false
	switch c.Type {
	case typeAPIKey:
		if v, ok := d.GetOk("api_key"); ok {
			key := v.(string)
			if key == "" || len(key) > maxAPIKeyLen || strings.ContainsAny(key, " \t\r\n") || hasControl(key) {
				return fmt.Sprintf("api_key must be 1-%d characters without spaces or control characters", maxAPIKeyLen)
			}
			c.APIKey, c.KeyHint = key, keyHint(key)
			secretChanged = true
		} else if creating {
			return "api_key is required for api_key credentials"
		}
	case typePassword:
		if msg := applyPasswordFields(d, svc, c, creating); msg != "" {
			return msg
		}
		_, secretChanged = d.GetOk("password")
	case typeFile:
		if msg := applyFileFields(d, svc, c, creating); msg != "" {
			return msg
		}
		if msg := applyGitHubAppFields(d, svc, c); msg != "" {
			return msg
		}
		_, secretChanged = d.GetOk("file")
	case typeOAuth2:
		if v, ok := d.GetOk("app"); ok {
			c.App = v.(string)
		}
		if v, ok := d.GetOk("refresh_token"); ok {
			rt := v.(string)
			if rt == "" || len(rt) > maxAPIKeyLen || hasControl(rt) {
				return fmt.Sprintf("refresh_token must be 1-%d characters without control characters", maxAPIKeyLen)
			}
			if c.OAuth == nil {
				c.OAuth = &oauthGrant{}
			}
			c.OAuth.RefreshToken = rt
			c.OAuth.AccessToken = ""
			c.OAuth.Expiry = time.Time{}
			c.OAuth.ConnectedAt = b.now().UTC()
			if msg := b.validateImportedRefreshToken(ctx, req.Storage, svc, c); msg != "" {
				return msg
			}
			secretChanged = true
		}
	}
	if secretChanged {
		c.State, c.StateReason = statusActive, ""
	}
	return ""
}

func applyPasswordFields(d *framework.FieldData, svc *service, c *credential, creating bool) string {
	if v, ok := d.GetOk("username"); ok {
		u := v.(string)
		if u == "" || len(u) > 256 || hasControl(u) {
			return "username must be 1-256 characters without control characters"
		}
		c.Username = u
	}
	if v, ok := d.GetOk("password"); ok {
		p := v.(string)
		if p == "" || len(p) > maxPasswordLen || hasControl(p) {
			return fmt.Sprintf("password must be 1-%d characters without control characters", maxPasswordLen)
		}
		c.Password = p
	}
	if v, ok := d.GetOk("host"); ok {
		h := v.(string)
		if !validHost(h) {
			return "host must be a DNS name or IP address"
		}
		c.Host = h
	}
	if v, ok := d.GetOk("port"); ok {
		p := v.(int)
		if p < 1 || p > 65535 {
			return "port must be between 1 and 65535"
		}
		c.Port = p
	}
	if creating && (c.Username == "" || c.Password == "") {
		return "username and password are required for password credentials"
	}
	if svc.RequiresHost && (c.Host == "" || c.Port == 0) {
		return fmt.Sprintf("host and port are required for %s credentials", svc.Name)
	}
	return applySMTPFields(d, svc, c)
}

// applySMTPFields sets an SMTP credential's submission settings; other
// password credentials have none.
func applySMTPFields(d *framework.FieldData, svc *service, c *credential) string {
	sec, secOK := d.GetOk("security")
	senders, sendersOK := d.GetOk("allowed_senders")
	if svc.Name != smtpService {
		if secOK || sendersOK {
			return fmt.Sprintf("security and allowed_senders are fields of %s credentials only", smtpService)
		}
		return ""
	}
	if c.SMTP == nil {
		c.SMTP = &smtpSettings{}
	}
	switch {
	case secOK:
		s, ok := mailsubmit.ParseSecurity(sec.(string))
		if !ok || s == "" {
			return "security must be starttls or tls"
		}
		c.SMTP.Security = string(s)
	case c.SMTP.Security == "":
		c.SMTP.Security = string(mailsubmit.DefaultSecurity(c.Port))
	}
	if sendersOK {
		list, msg := parseAllowedSenders(senders.([]string))
		if msg != "" {
			return msg
		}
		c.SMTP.AllowedSenders = list
	}
	return ""
}

// validateOAuthCred checks that an oauth2 credential names an app of its
// service. It returns a message for the caller, or an error.
func (b *backend) validateOAuthCred(ctx context.Context, s logical.Storage, svc *service, c *credential) (string, error) {
	if c.Type != typeOAuth2 {
		return "", nil
	}
	if c.App == "" {
		return "app is required for oauth2 credentials: register the OAuth client under apps/ first", nil
	}
	app, err := getApp(ctx, s, c.App)
	if err != nil {
		return "", err
	}
	if app == nil {
		return fmt.Sprintf("app %q does not exist", c.App), nil
	}
	if app.Service != svc.Name {
		return fmt.Sprintf("app %q is registered for %s, not %s", c.App, app.Service, svc.Name), nil
	}
	c.ClientCredentials = app.Grant == grantClientCredentials
	if c.ClientCredentials && c.OAuth.connected() {
		return fmt.Sprintf("app %q uses the client credentials grant: its credentials hold no refresh_token", c.App), nil
	}
	return "", nil
}
