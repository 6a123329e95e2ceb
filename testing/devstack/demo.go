package devstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/testing/oauthserver"
	"github.com/clankteam/credentials/testing/smtpserver"
	"github.com/clankteam/credentials/testing/tlsca"
	"github.com/clankteam/credentials/testing/upstream"
)

// demo is what makes the stack usable offline: a local OAuth provider with
// a consent page (so Connect works), a local API behind the broker, and
// sample credentials of every type.
type demo struct {
	provider *oauthserver.Server
	api      *upstream.Server
	// smtp is a local submission server for the mailer credential, when
	// the engine trusts the stack's test CA (its own Vault).
	smtp *smtpserver.Server
	// APIKey is the demo API's key, stored as credential demo-api.
	apiKey string
}

func (d *demo) close() {
	if d.provider != nil {
		d.provider.Close()
	}
	if d.api != nil {
		d.api.Close()
	}
	if d.smtp != nil {
		d.smtp.Close()
	}
}

// startDemo starts the local provider, API and (with ca) SMTP server and
// seeds org with sample credentials. callbackURL is the portal's OAuth
// callback; logOut hears of each message the demo SMTP server accepts.
// Long on purpose: the demo org's setup, in the order it must happen.
func startDemo(ctx context.Context, c *api.Client, org, callbackURL string, ca *tlsca.CA, logOut io.Writer) (*demo, error) {
	d := &demo{apiKey: "demo_live_" + randomHex(16)}
	var err error
	d.provider, err = oauthserver.Start(oauthserver.Options{
		Addr: addrOrFree("", "127.0.0.1:8300"),
		User: oauthserver.Identity{ID: "42", Email: "demo@acme.example", Login: "demo"},
	})
	if err != nil {
		return nil, fmt.Errorf("starting the demo OAuth provider: %w", err)
	}
	clientSecret := randomHex(16)
	if err := d.provider.AddClient("acme-portal", clientSecret, []string{callbackURL}, nil); err != nil {
		d.close()
		return nil, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		d.close()
		return nil, err
	}
	const saEmail = "agent-robot@acme-demo.iam.gserviceaccount.com"
	d.provider.AddServiceAccount(saEmail, &saKey.PublicKey)

	d.api, err = upstream.Start(upstream.Options{Addr: addrOrFree("", "127.0.0.1:8400"), Key: d.apiKey})
	if err != nil {
		d.close()
		return nil, fmt.Errorf("starting the demo API: %w", err)
	}

	saJSON, err := serviceAccountJSON(saKey, saEmail, d.provider.TokenURL())
	if err != nil {
		d.close()
		return nil, err
	}
	mount := contract.Mount(org)
	in3days := time.Now().Add(3 * 24 * time.Hour).UTC().Format(time.RFC3339)
	mailer := map[string]interface{}{"type": "password", "service": "smtp", "username": "mailer@acme.example", "password": randomHex(12),
		"host": "smtp.acme.example", "port": 587, "description": "Sample SMTP login"}
	if ca != nil {
		if d.smtp, err = startDemoSMTP(ca, mailer["username"].(string), mailer["password"].(string), logOut); err != nil {
			d.close()
			return nil, err
		}
		mailer["host"], mailer["port"] = d.smtp.Host, d.smtp.Port
		mailer["description"] = "Sends through the local demo SMTP server; make run's output shows each message"
		mailer["allowed_senders"] = "@acme.example"
	}
	writes := []struct {
		path string
		data map[string]interface{}
	}{
		// Health checks off: the sample Stripe key's would go to Stripe
		// itself, and the demo runs offline.
		{"config", map[string]interface{}{"redirect_url": callbackURL, "health_check_interval": 0}},
		{"services/demo-provider", map[string]interface{}{
			"display_name": "Demo provider", "types": "oauth2", "base_urls": d.provider.URL(),
			"injection": map[string]interface{}{"oauth2": map[string]interface{}{"style": "header", "header": "Authorization", "format": "Bearer {secret}"}},
			"oauth": map[string]interface{}{
				"auth_url": d.provider.AuthURL(), "token_url": d.provider.TokenURL(), "revoke_url": d.provider.RevokeURL(),
				"revoke_style": "rfc7009", "userinfo_url": d.provider.UserinfoURL(), "pkce": true, "default_scopes": []string{"read"},
			},
			"verify": map[string]interface{}{"method": "GET", "url": d.provider.UserinfoURL(), "expect_status": 200},
		}},
		{"services/demo-api", map[string]interface{}{
			"display_name": "Demo API", "types": "api_key", "base_urls": d.api.URL,
			"injection": map[string]interface{}{"api_key": map[string]interface{}{"style": "header", "header": "Authorization", "format": "Bearer {secret}"}},
			"verify":    map[string]interface{}{"method": "GET", "url": d.api.URL + "/v1/ping", "expect_status": 200},
		}},
		{"apps/demo-provider", map[string]interface{}{"service": "demo-provider", "client_id": "acme-portal", "client_secret": clientSecret}},
		{"creds/demo-oauth", map[string]interface{}{"type": "oauth2", "service": "demo-provider", "app": "demo-provider", "description": "Connect me: the demo provider's consent page runs locally"}},
		{"creds/demo-api", map[string]interface{}{"type": "api_key", "service": "demo-api", "api_key": d.apiKey, "description": "Agents call the demo API through the broker with this"}},
		{"creds/stripe-test", map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": "sk_test_" + randomHex(12), "expires_at": in3days, "description": "Sample Stripe key that expires soon"}},
		{"creds/mailer", mailer},
		{"creds/gcp-robot", map[string]interface{}{"type": "file", "service": "gcp-service-account", "file": base64.StdEncoding.EncodeToString(saJSON), "description": "Mints tokens from the demo provider"}},
	}
	for _, w := range writes {
		if _, err := c.Logical().WriteWithContext(ctx, mount+"/"+w.path, w.data); err != nil {
			d.close()
			return nil, fmt.Errorf("seeding %s: %w", w.path, err)
		}
	}
	return d, nil
}

// startDemoSMTP is a local submission server (STARTTLS, AUTH) for the
// demo mailer; it logs each message it accepts, as a mail catcher would.
func startDemoSMTP(ca *tlsca.CA, username, password string, logOut io.Writer) (*smtpserver.Server, error) {
	cfg, err := ca.ServerTLS()
	if err != nil {
		return nil, err
	}
	srv, err := smtpserver.Start(smtpserver.Options{
		Username: username, Password: password, TLS: cfg,
		OnMessage: func(m smtpserver.Message) {
			subject := ""
			if msg, err := mail.ReadMessage(bytes.NewReader(m.Data)); err == nil {
				subject, _ = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
			}
			fmt.Fprintf(logOut, "demo SMTP: message from %s to %s: %q (%d bytes)\n", m.From, strings.Join(m.To, ", "), subject, len(m.Data))
		},
	})
	if err != nil {
		return nil, fmt.Errorf("starting the demo SMTP server: %w", err)
	}
	return srv, nil
}

func serviceAccountJSON(key *rsa.PrivateKey, email, tokenURI string) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "acme-demo",
		"private_key_id": randomHex(8),
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   email,
		"token_uri":      tokenURI,
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
