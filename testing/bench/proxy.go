package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/testing/tlsca"
	"github.com/clankteam/credentials/testing/upstream"
)

// The proxy's MITM mode: a program with HTTPS_PROXY calling an HTTPS
// service, against the same program calling it directly. Both keep their
// connections (the program's to the proxy, the proxy's to the service),
// as a CLI making several calls does.

// credTLS is the bench agent's credential on the HTTPS upstream.
const credTLS = "key-tls"

func (st *stack) startTLSUpstream() error {
	st.upCA = st.vault.CA
	if upstreamCADir != "" {
		var err error
		if st.upCA, err = tlsca.Load(upstreamCADir); err != nil {
			return fmt.Errorf("-upstream-ca: %w", err)
		}
	}
	var names []string
	if peer.tlsHost != "" {
		host, _, err := net.SplitHostPort(peer.tlsHost)
		if err != nil {
			return fmt.Errorf("-peer-tls-host: %w", err)
		}
		names = append(names, host)
	}
	cfg, err := st.upCA.ServerTLS(names...)
	if err != nil {
		return err
	}
	if st.upTLS, err = upstream.Start(upstream.Options{Key: apiKey, TLS: cfg, Addr: upstreamTLSAddr}); err != nil {
		return err
	}
	st.proxyCADir = filepath.Join(st.tmp, "proxy-ca")
	_, err = portal.CreateProxyCA(st.proxyCADir, org, false)
	return err
}

// proxyTLSClients makes the direct HTTPS client and the one through the
// proxy at proxy (with its authorization in the URL).
func (st *stack) proxyTLSClients(proxy *url.URL) error {
	caPEM, err := os.ReadFile(filepath.Join(st.proxyCADir, org+".pem"))
	if err != nil {
		return err
	}
	proxyCA := x509.NewCertPool()
	if !proxyCA.AppendCertsFromPEM(caPEM) {
		return errors.New("the proxy CA is not PEM")
	}
	st.tlsClient = &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: st.upCA.Pool()}, ForceAttemptHTTP2: true,
		MaxIdleConns: 256, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute,
	}}
	st.proxyTLS = &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyURL(proxy),
		TLSClientConfig: &tls.Config{RootCAs: proxyCA}, ForceAttemptHTTP2: true,
		MaxIdleConns: 256, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute,
	}}
	return nil
}

// outboundRoots are the CAs the portal checks services against: the
// harness's and the HTTPS upstream's.
func (st *stack) outboundRoots() *x509.CertPool {
	pool := st.vault.CA.Pool()
	pool.AppendCertsFromPEM(st.upCA.PEM)
	return pool
}

// peerTLSClient makes the client through the peer's MITM proxy at proxy,
// trusting the peer's CA; it authenticates the CONNECT as the peer asks.
func (st *stack) peerTLSClient(proxy *url.URL) error {
	if peer.tlsHost == "" || peer.caFile == "" {
		return nil
	}
	caPEM, err := os.ReadFile(peer.caFile)
	if err != nil {
		return fmt.Errorf("-peer-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("-peer-ca: not PEM")
	}
	st.peerTLS = &http.Client{Transport: &http.Transport{
		Proxy:              http.ProxyURL(proxy),
		ProxyConnectHeader: http.Header{"Proxy-Authorization": {"Bearer " + peer.token}},
		TLSClientConfig:    &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true,
		MaxIdleConns: 256, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute,
	}}
	return nil
}

func (st *stack) proxyTLSScenarios() []scenario {
	return []scenario{
		{"direct-tls", "direct to the upstream over HTTPS (HTTP/2)", func(ctx context.Context) error {
			return st.getVia(ctx, st.tlsClient, st.upTLS.URL+"/v1/ping", "Authorization", "Bearer "+apiKey, nil)
		}},
		{"proxy-tls", "through the forward proxy's intercepted tunnel (HTTPS_PROXY, HTTP/2)", func(ctx context.Context) error {
			return st.viaProxy(ctx, st.proxyTLS, st.upTLS.URL+"/v1/ping")
		}},
	}
}
