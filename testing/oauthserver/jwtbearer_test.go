package oauthserver

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	//lint:ignore SA1019 the test signs assertions with chosen (also wrong) claims; jws is the signer x/oauth2 itself uses
	"golang.org/x/oauth2/jws"
	"golang.org/x/oauth2/jwt"
)

const saEmail = "agent-sa@demo-project.iam.gserviceaccount.test"

var (
	keysOnce sync.Once
	saKey    *rsa.PrivateKey
	otherKey *rsa.PrivateKey
)

// testKeys generates two RSA keys once per test binary (generation is the
// slow part under -race).
func testKeys(t *testing.T) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if saKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if otherKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return saKey, otherKey
}

func pemKey(k *rsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// saConfig is what golang.org/x/oauth2/google builds from a service-account
// JSON file.
func saConfig(srv *Server, key *rsa.PrivateKey) *jwt.Config {
	return &jwt.Config{
		Email:      saEmail,
		PrivateKey: pemKey(key),
		Scopes:     []string{"https://www.googleapis.test/auth/drive.readonly"},
		TokenURL:   srv.TokenURL(),
	}
}

func TestJWTBearerGrant(t *testing.T) {
	key, _ := testKeys(t)
	srv, _ := newTestServer(t, Options{
		ServiceAccounts:     map[string]*rsa.PublicKey{saEmail: &key.PublicKey},
		AccessTokenLifespan: 30 * time.Minute,
	})
	tok, err := saConfig(srv, key).TokenSource(ctxT(t)).Token()
	if err != nil {
		t.Fatalf("jwt-bearer: %v", err)
	}
	if tok.AccessToken == "" || tok.RefreshToken != "" {
		t.Fatalf("token %+v", tok)
	}
	if left := time.Until(tok.Expiry); left < 29*time.Minute || left > 31*time.Minute {
		t.Errorf("expires in %v, want about 30m", left)
	}
	if !srv.Introspect(tok.AccessToken) {
		t.Error("issued token not active")
	}
	if code, id := userinfo(t, srv, tok.AccessToken); code != http.StatusOK || id.Email != saEmail {
		t.Errorf("userinfo: %d %+v", code, id)
	}
	want := []JWTBearerGrant{{ServiceAccount: saEmail, Scopes: []string{"https://www.googleapis.test/auth/drive.readonly"}}}
	if got := srv.JWTBearerGrants(); !reflect.DeepEqual(got, want) {
		t.Errorf("grants = %+v", got)
	}
	if srv.TokenCallsFor(GrantJWTBearer) != 1 {
		t.Errorf("jwt-bearer calls = %d", srv.TokenCallsFor(GrantJWTBearer))
	}
}

func TestJWTBearerDomainWideDelegation(t *testing.T) {
	key, _ := testKeys(t)
	srv, _ := newTestServer(t, Options{})
	srv.AddServiceAccount(saEmail, &key.PublicKey)
	conf := saConfig(srv, key)
	conf.Subject = "alice@corp.example.test"
	tok, err := conf.TokenSource(ctxT(t)).Token()
	if err != nil {
		t.Fatal(err)
	}
	if g := srv.JWTBearerGrants(); len(g) != 1 || g[0].Subject != "alice@corp.example.test" || g[0].ServiceAccount != saEmail {
		t.Errorf("grants = %+v", g)
	}
	if code, id := userinfo(t, srv, tok.AccessToken); code != http.StatusOK || id.Email != "alice@corp.example.test" {
		t.Errorf("userinfo under delegation: %d %+v", code, id)
	}
}

func TestJWTBearerRejections(t *testing.T) {
	key, other := testKeys(t)
	srv, _ := newTestServer(t, Options{ServiceAccounts: map[string]*rsa.PublicKey{saEmail: &key.PublicKey}})

	expectInvalid := func(name, wantErr string, assertion string) {
		t.Helper()
		resp, body := postTokenAuth(t, srv, false, url.Values{"grant_type": {GrantJWTBearer}, "assertion": {assertion}}, "")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"error":"`+wantErr+`"`) {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
	sign := func(k *rsa.PrivateKey, mod func(*jws.ClaimSet)) string {
		now := time.Now()
		cs := &jws.ClaimSet{
			Iss: saEmail, Aud: srv.TokenURL(), Scope: "scope-a",
			Iat: now.Add(-10 * time.Second).Unix(), Exp: now.Add(time.Hour - 10*time.Second).Unix(),
		}
		if mod != nil {
			mod(cs)
		}
		s, err := jws.Encode(&jws.Header{Algorithm: "RS256", Typ: "JWT"}, cs, k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// The control case passes, so each rejection below is down to its one change.
	resp, body := postTokenAuth(t, srv, false, url.Values{"grant_type": {GrantJWTBearer}, "assertion": {sign(key, nil)}}, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("control assertion refused: %s", body)
	}

	expectInvalid("wrong key", "invalid_grant", sign(other, nil))
	expectInvalid("unknown account", "invalid_grant", sign(key, func(c *jws.ClaimSet) { c.Iss = "nobody@x.test" }))
	expectInvalid("wrong audience", "invalid_grant", sign(key, func(c *jws.ClaimSet) { c.Aud = srv.URL() + "/other" }))
	expectInvalid("expired", "invalid_grant", sign(key, func(c *jws.ClaimSet) {
		c.Iat = time.Now().Add(-2 * time.Hour).Unix()
		c.Exp = time.Now().Add(-time.Hour).Unix()
	}))
	expectInvalid("lifetime over 1h", "invalid_grant", sign(key, func(c *jws.ClaimSet) { c.Exp = time.Now().Add(3 * time.Hour).Unix() }))
	expectInvalid("no scope", "invalid_scope", sign(key, func(c *jws.ClaimSet) { c.Scope = "" }))
	expectInvalid("garbage", "invalid_grant", "not.a.jwt")

	// x/oauth2/jwt reports the wrong-key case as an error too (it does not
	// parse the error code, so check the status and body).
	_, err := saConfig(srv, other).TokenSource(ctxT(t)).Token()
	if re := retrieveError(t, err); re.Response.StatusCode != http.StatusBadRequest || !strings.Contains(string(re.Body), "invalid_grant") {
		t.Errorf("wrong key through x/oauth2/jwt: %d %s", re.Response.StatusCode, re.Body)
	}
	if n := len(srv.JWTBearerGrants()); n != 1 {
		t.Errorf("%d grants recorded, want only the control", n)
	}
}
