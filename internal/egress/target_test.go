package egress

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// TestCleanPathRefusesTricks: each path that some server or proxy on the
// way would resolve into another path than the one authorized.
func TestCleanPathRefusesTricks(t *testing.T) {
	for _, p := range []string{
		"/v1/../admin", "/v1/./balance", "/v1/..;/admin", "/v1/.;x/b", "/v1/%2e%2e/admin", "/v1/%2E%2e/admin",
		"/v1/%252e%252e/admin", "/v1/balance%2f..%2fadmin", "/v1/a%5cb", "/v1\\a", "/v1//balance",
		"/v1/%00", "/v1/%0a", "v1/balance", "", "/v1/balance?x=1", "/v1/ba lance", "/v1/#x",
	} {
		if _, err := CleanPath(p); err == nil {
			t.Errorf("CleanPath(%q) passed", p)
		}
	}
	for p, want := range map[string]string{
		"/v1/balance": "/v1/balance", "/": "/", "/v1/files/a%20b": "/v1/files/a b",
		"/v1/charges/": "/v1/charges/", "/v1/x;v=1": "/v1/x;v=1", "/v1/...": "/v1/...",
	} {
		got, err := CleanPath(p)
		if err != nil || got != want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", p, got, err, want)
		}
	}
}

func TestOutboundHeadersRefusesRewriteHeaders(t *testing.T) {
	for _, h := range []string{"X-Original-URL", "X-Rewrite-URL"} {
		_, err := OutboundHeaders(http.Header{h: {"/admin"}}, Injection{}, "")
		if e, ok := err.(*Error); !ok || e.Status != http.StatusBadRequest || !strings.Contains(e.Msg, h[:10]) {
			t.Errorf("%s: %v", h, err)
		}
	}
}

func TestPublicAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "2606:4700::1111": true, "1.1.1.1": true,
		"127.0.0.1": false, "::1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"169.254.169.254": false, "fe80::1": false, "fc00::1": false, "0.0.0.0": false, "::": false,
		"100.64.0.1": false, "::ffff:127.0.0.1": false, "::ffff:10.0.0.1": false, "64:ff9b::a9fe:a9fe": false,
		"64:ff9b::808:808": true, "64:ff9b:1::a9fe:a9fe": false, "224.0.0.1": false, "255.255.255.255": false,
		"198.18.0.1": false, "2002:7f00:1::": false, "fd00:ec2::254": false,
	} {
		if got := PublicAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("PublicAddr(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestGuardPrivateTargets(t *testing.T) {
	g, err := ParseGuard("10.1.0.0/16, 127.0.0.1, vault.internal, *.svc.local")
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"10.1.2.3": true, "10.2.0.1": false, "127.0.0.1": true, "127.0.0.2": false,
		"vault.internal": true, "x.svc.local": true, "svc.local": false, "example.com": false,
	} {
		if got := g.Private(host); got != want {
			t.Errorf("Private(%s) = %v, want %v", host, got, want)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "http://x", "a b"} {
		if _, err := ParseGuard(bad); err == nil {
			t.Errorf("ParseGuard(%q) passed", bad)
		}
	}
}
