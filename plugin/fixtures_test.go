package credentials

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"sync"
	"testing"
)

var (
	testRSAKeyOnce sync.Once
	testRSAKey     *rsa.PrivateKey
)

// testServiceAccountJSON returns a GCP service-account key file with a real
// RSA key and the given token URI.
func testServiceAccountJSON(tb testing.TB, tokenURI string) []byte {
	tb.Helper()
	testRSAKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		testRSAKey = k
	})
	der, err := x509.MarshalPKCS8PrivateKey(testRSAKey)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "demo-project",
		"private_key_id": "key-1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "robot@demo-project.iam.gserviceaccount.com",
		"client_id":      "1234567890",
		"token_uri":      tokenURI,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
