package egress

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"

	"strings"
	"testing"
)

// TestGuardRefusesLoopbackByDefault: with no operator setting, a loopback
// service is not dialled, by address or by a name that resolves to it,
// and a proxy from the environment is not used to get around the check.
func TestGuardRefusesLoopbackByDefault(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	defer srv.Close()
	t.Setenv("HTTPS_PROXY", srv.URL)
	t.Setenv("HTTP_PROXY", srv.URL)
	u, _ := url.Parse(srv.URL)
	c := (&Guard{}).Client(ClientOptions{})
	for _, target := range []string{srv.URL, "http://localhost:" + u.Port(), "https://localhost:" + u.Port(), "https://[::ffff:127.0.0.1]:" + u.Port()} {
		_, err := c.Get(target)
		if !errors.Is(err, ErrPrivateTarget) {
			t.Errorf("%s: %v, want ErrPrivateTarget", target, err)
		}
	}
	if hits != 0 {
		t.Fatalf("%d request(s) reached loopback", hits)
	}
}

// TestGuardAllowsOperatorTargets: what the operator lists is reachable,
// plain http included; a public host over plain http is not.
func TestGuardAllowsOperatorTargets(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	defer srv.Close()
	g, _ := ParseGuard("127.0.0.0/8")
	resp, err := g.Client(ClientOptions{}).Get(srv.URL)
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("allowed target: %v", err)
	}
	resp.Body.Close()
	if err := g.CheckURL(&url.URL{Scheme: "http", Host: "example.com"}); !errors.Is(err, ErrPrivateTarget) {
		t.Fatalf("plain http to a public host: %v", err)
	}
}

// TestGuardChecksTheDialledAddress: a name that resolves to loopback is
// refused at dial time, however it was checked before.
func TestGuardChecksTheDialledAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	_, err = (&Guard{}).DialContext(context.Background(), "tcp", "localhost:"+port)
	if err == nil || !strings.Contains(err.Error(), "non-public") {
		t.Fatalf("dial localhost: %v", err)
	}
}
