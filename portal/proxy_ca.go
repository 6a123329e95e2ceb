package portal

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/clankteam/credentials/internal/contract"
)

// The forward proxy intercepts TLS with a CA of the org's own, which the
// operator creates (portal proxy-ca) and the org's agents trust: one org's
// CA signs nothing a program of another org accepts. Each CA is two files
// in the operator's directory, <org>.pem (the certificate, to give agents)
// and <org>-key.pem (its key, only the portal reads); leaf certificates
// for the hosts agents call are made in memory as they are needed.

// proxyCAValidity is how long a CA made by CreateProxyCA is valid.
const proxyCAValidity = 2 * 365 * 24 * time.Hour

// leafValidity is how long a leaf certificate is made for; one is made
// again when less than leafRenewBefore is left.
const (
	leafValidity    = 24 * time.Hour
	leafRenewBefore = time.Hour
	maxLeaves       = 4096
)

// ProxyCAPaths are the files of org's proxy CA in dir.
func ProxyCAPaths(dir, org string) (cert, key string) {
	return filepath.Join(dir, org+".pem"), filepath.Join(dir, org+"-key.pem")
}

// CreateProxyCA makes org's proxy CA in dir and returns the certificate's
// path. An existing CA is kept unless replace is set: agents trust it.
func CreateProxyCA(dir, org string, replace bool) (string, error) {
	if !contract.ValidOrgName(org) {
		return "", fmt.Errorf("%q is not an org name", org)
	}
	certPath, keyPath := ProxyCAPaths(dir, org)
	if _, err := os.Stat(certPath); err == nil && !replace {
		return "", fmt.Errorf("%s exists: agents trust it; pass -replace to make a new one", certPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Credentials broker proxy CA, org " + org, Organization: []string{org}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(proxyCAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// The key first, readable by the portal's user alone, so that a
	// certificate is never there without it.
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", err
	}
	clear(keyDER)
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", err
	}
	return certPath, nil
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// proxyCAs loads orgs' CAs from the operator's directory and makes their
// leaf certificates.
type proxyCAs struct {
	dir string
	// leafKey is the key of every leaf this process makes: leaves are
	// short-lived, and a key per host would only cost time.
	leafKey *ecdsa.PrivateKey

	mu     sync.Mutex
	cas    map[string]*orgCA
	leaves map[string]*tls.Certificate
}

type orgCA struct {
	cert *x509.Certificate
	key  any
}

var errNoProxyCA = errors.New("no proxy CA")

func newProxyCAs(dir string) (*proxyCAs, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &proxyCAs{dir: dir, leafKey: key, cas: map[string]*orgCA{}, leaves: map[string]*tls.Certificate{}}, nil
}

// ca returns org's CA, read from its files the first time.
func (p *proxyCAs) ca(org string) (*orgCA, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ca, ok := p.cas[org]; ok {
		return ca, nil
	}
	if p.dir == "" || !contract.ValidOrgName(org) {
		return nil, errNoProxyCA
	}
	certPath, keyPath := ProxyCAPaths(p.dir, org)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, errNoProxyCA
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %s has no key beside it", errNoProxyCA, certPath)
	}
	defer clear(keyPEM)
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%w: %s or its key is not PEM", errNoProxyCA, certPath)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil || !cert.IsCA {
		return nil, fmt.Errorf("%w: %s is not a CA certificate", errNoProxyCA, certPath)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: the key of %s cannot be read", errNoProxyCA, certPath)
	}
	ca := &orgCA{cert: cert, key: key}
	p.cas[org] = ca
	return ca, nil
}

// leaf returns a certificate for host signed by org's CA.
func (p *proxyCAs) leaf(org, host string) (*tls.Certificate, error) {
	ca, err := p.ca(org)
	if err != nil {
		return nil, err
	}
	id := org + "\x00" + host
	p.mu.Lock()
	if c, ok := p.leaves[id]; ok && time.Until(c.Leaf.NotAfter) > leafRenewBefore {
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &p.leafKey.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: p.leafKey, Leaf: parsed}
	p.mu.Lock()
	if len(p.leaves) >= maxLeaves {
		clear(p.leaves)
	}
	p.leaves[id] = c
	p.mu.Unlock()
	return c, nil
}
