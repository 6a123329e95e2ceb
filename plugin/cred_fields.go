package credentials

import (
	"context"
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
// it returns a userError when a field is wrong, and then c must not be
// stored. Replacing a secret makes the credential active again.
func (b *backend) applyCredFields(ctx context.Context, req *logical.Request, d *framework.FieldData, svc *service, c *credential, creating bool) error {
	if err := checkTypeFields(req, c.Type); err != nil {
		return err
	}
	if err := applyCommonFields(d, c); err != nil {
		return err
	}
	secretChanged, err := b.applySecretFields(ctx, req, d, svc, c, creating)
	if err != nil {
		return err
	}
	if secretChanged {
		c.State, c.StateReason = statusActive, ""
	}
	return nil
}

// checkTypeFields refuses a field of another credential type than typ.
func checkTypeFields(req *logical.Request, typ string) error {
	allowed := map[string][]string{
		typeAPIKey:   {"api_key"},
		typePassword: {"username", "password", "host", "port", "security", "allowed_senders"},
		typeFile:     {"file", "filename", "app_id", "installation_id", "repositories", "permissions"},
		typeOAuth2:   {"app", "refresh_token"},
	}
	for other, fields := range allowed {
		if other == typ {
			continue
		}
		for _, f := range fields {
			if _, ok := req.Data[f]; ok && !slices.Contains(allowed[typ], f) {
				return userErrorf("%s is not a field of %s credentials", f, typ)
			}
		}
	}
	return nil
}

// applyCommonFields applies the fields every type has.
func applyCommonFields(d *framework.FieldData, c *credential) error {
	if v, ok := d.GetOk("description"); ok {
		desc := v.(string)
		if len(desc) > maxDescLen || hasControl(desc) {
			return userErrorf("description must be at most %d characters without control characters", maxDescLen)
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
				return userErrorf("expires_at must be an RFC 3339 time such as 2027-01-31T00:00:00Z")
			}
			t = t.UTC()
			c.ExpiresAt = &t
		}
	}
	return nil
}

// applySecretFields applies the fields of c's type; changed says a secret
// was replaced.
func (b *backend) applySecretFields(ctx context.Context, req *logical.Request, d *framework.FieldData, svc *service, c *credential, creating bool) (changed bool, err error) {
	switch c.Type {
	case typeAPIKey:
		if v, ok := d.GetOk("api_key"); ok {
			key := v.(string)
			if key == "" || len(key) > maxAPIKeyLen || strings.ContainsAny(key, " \t\r\n") || hasControl(key) {
				return false, userErrorf("api_key must be 1-%d characters without spaces or control characters", maxAPIKeyLen)
			}
			c.APIKey, c.KeyHint = key, keyHint(key)
			changed = true
		} else if creating {
			return false, userErrorf("api_key is required for api_key credentials")
		}
	case typePassword:
		if err := applyPasswordFields(d, svc, c, creating); err != nil {
			return false, err
		}
		_, changed = d.GetOk("password")
	case typeFile:
		if err := applyFileFields(d, svc, c, creating); err != nil {
			return false, err
		}
		if err := applyGitHubAppFields(d, svc, c); err != nil {
			return false, err
		}
		_, changed = d.GetOk("file")
	case typeOAuth2:
		if v, ok := d.GetOk("app"); ok {
			c.App = v.(string)
		}
		if v, ok := d.GetOk("refresh_token"); ok {
			rt := v.(string)
			if rt == "" || len(rt) > maxAPIKeyLen || hasControl(rt) {
				return false, userErrorf("refresh_token must be 1-%d characters without control characters", maxAPIKeyLen)
			}
			if c.OAuth == nil {
				c.OAuth = &oauthGrant{}
			}
			c.OAuth.RefreshToken = rt
			c.OAuth.AccessToken = ""
			c.OAuth.Expiry = time.Time{}
			c.OAuth.ConnectedAt = b.now().UTC()
			if err := b.validateImportedRefreshToken(ctx, req.Storage, svc, c); err != nil {
				return false, err
			}
			changed = true
		}
	}
	return changed, nil
}

func applyPasswordFields(d *framework.FieldData, svc *service, c *credential, creating bool) error {
	if v, ok := d.GetOk("username"); ok {
		u := v.(string)
		if u == "" || len(u) > 256 || hasControl(u) {
			return userErrorf("username must be 1-256 characters without control characters")
		}
		c.Username = u
	}
	if v, ok := d.GetOk("password"); ok {
		p := v.(string)
		if p == "" || len(p) > maxPasswordLen || hasControl(p) {
			return userErrorf("password must be 1-%d characters without control characters", maxPasswordLen)
		}
		c.Password = p
	}
	if v, ok := d.GetOk("host"); ok {
		h := v.(string)
		if !validHost(h) {
			return userErrorf("host must be a DNS name or IP address")
		}
		c.Host = h
	}
	if v, ok := d.GetOk("port"); ok {
		p := v.(int)
		if p < 1 || p > 65535 {
			return userErrorf("port must be between 1 and 65535")
		}
		c.Port = p
	}
	if creating && (c.Username == "" || c.Password == "") {
		return userErrorf("username and password are required for password credentials")
	}
	if svc.RequiresHost && (c.Host == "" || c.Port == 0) {
		return userErrorf("host and port are required for %s credentials", svc.Name)
	}
	return applySMTPFields(d, svc, c)
}

// applySMTPFields sets an SMTP credential's submission settings; other
// password credentials have none.
func applySMTPFields(d *framework.FieldData, svc *service, c *credential) error {
	sec, secOK := d.GetOk("security")
	senders, sendersOK := d.GetOk("allowed_senders")
	if svc.Name != smtpService {
		if secOK || sendersOK {
			return userErrorf("security and allowed_senders are fields of %s credentials only", smtpService)
		}
		return nil
	}
	if c.SMTP == nil {
		c.SMTP = &smtpSettings{}
	}
	switch {
	case secOK:
		s, ok := mailsubmit.ParseSecurity(sec.(string))
		if !ok || s == "" {
			return userErrorf("security must be starttls or tls")
		}
		c.SMTP.Security = string(s)
	case c.SMTP.Security == "":
		c.SMTP.Security = string(mailsubmit.DefaultSecurity(c.Port))
	}
	if sendersOK {
		list, err := parseAllowedSenders(senders.([]string))
		if err != nil {
			return err
		}
		c.SMTP.AllowedSenders = list
	}
	return nil
}

// validateOAuthCred checks that an oauth2 credential names an app of its
// service: a userError says what is wrong, any other error is storage.
func (b *backend) validateOAuthCred(ctx context.Context, s logical.Storage, svc *service, c *credential) error {
	if c.Type != typeOAuth2 {
		return nil
	}
	if c.App == "" {
		return userErrorf("app is required for oauth2 credentials: register the OAuth client under apps/ first")
	}
	app, err := getApp(ctx, s, c.App)
	if err != nil {
		return err
	}
	if app == nil {
		return userErrorf("app %q does not exist", c.App)
	}
	if app.Service != svc.Name {
		return userErrorf("app %q is registered for %s, not %s", c.App, app.Service, svc.Name)
	}
	c.ClientCredentials = app.Grant == grantClientCredentials
	if c.ClientCredentials && c.OAuth.Connected() {
		return userErrorf("app %q uses the client credentials grant: its credentials hold no refresh_token", c.App)
	}
	return nil
}
