package credentials

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
)

const maxFileSize = 1 << 20

func applyFileFields(d *framework.FieldData, svc *service, c *credential, creating bool) error {
	if v, ok := d.GetOk("filename"); ok {
		fn := v.(string)
		if fn == "" || len(fn) > 255 || strings.ContainsAny(fn, `/\`) || hasControl(fn) {
			return userErrorf("filename must be 1-255 characters without slashes or control characters")
		}
		c.Filename = fn
	}
	if v, ok := d.GetOk("file"); ok {
		raw := v.(string)
		// 4 base64 characters carry 3 bytes: refuse oversize input before
		// decoding it.
		if len(raw) > base64.StdEncoding.EncodedLen(maxFileSize)+4 {
			return userErrorf("file is larger than %d bytes", maxFileSize)
		}
		content, err := base64.StdEncoding.DecodeString(strings.TrimSpace(raw))
		if err != nil {
			return userErrorf("file must be base64 (standard encoding)")
		}
		if len(content) == 0 {
			return userErrorf("file is empty")
		}
		if len(content) > maxFileSize {
			return userErrorf("file is larger than %d bytes", maxFileSize)
		}
		sa, err := inspectServiceAccount(content, svc.ServiceAccountJSON)
		if err != nil {
			return err
		}
		c.File, c.ServiceAccount = content, sa
	} else if creating {
		return userErrorf("file is required for file credentials")
	}
	if c.Filename == "" {
		switch {
		case creating && c.ServiceAccount != nil:
			c.Filename = "service-account.json"
		case creating && svc.GitHubApp:
			c.Filename = "github-app.pem"
		case creating:
			return userErrorf("filename is required for file credentials")
		}
	}
	return nil
}

// serviceAccountKey is the part of a GCP service-account key file the
// engine checks.
type serviceAccountKey struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`
}

// inspectServiceAccount recognises a GCP service-account key and checks it.
// A file that is not one is accepted as is unless the service requires one.
// Messages never quote the file.
func inspectServiceAccount(content []byte, required bool) (*serviceAccountInfo, error) {
	var k serviceAccountKey
	if err := json.Unmarshal(content, &k); err != nil || k.Type != "service_account" {
		if required {
			return nil, userErrorf(`file must be a GCP service-account key (JSON with "type": "service_account")`)
		}
		return nil, nil
	}
	if k.ClientEmail == "" || !strings.Contains(k.ClientEmail, "@") {
		return nil, userErrorf("service-account key has no valid client_email")
	}
	if _, err := parsePrivateKey(k.PrivateKey); err != nil {
		return nil, userErrorf("service-account key's private_key is not a PEM RSA private key")
	}
	u, err := url.Parse(k.TokenURI)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
		return nil, userErrorf("service-account key's token_uri must be an https URL")
	}
	return &serviceAccountInfo{
		ClientEmail:  k.ClientEmail,
		ProjectID:    k.ProjectID,
		PrivateKeyID: k.PrivateKeyID,
		TokenURI:     k.TokenURI,
	}, nil
}

// parsePrivateKey accepts the PKCS #8 keys Google issues and PKCS #1 keys.
func parsePrivateKey(pemText string) (any, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return x509.ParsePKCS1PrivateKey(block.Bytes)
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
