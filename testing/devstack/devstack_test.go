package devstack

import (
	"net"
	"strings"
	"testing"
)

// TestAddrOrFreeWhenTaken: a taken default port is replaced by a free one
// that names its port, never by ":0", which Vault would bind while the
// stack waited on it.
func TestAddrOrFreeWhenTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().String()
	got := addrOrFree("", taken)
	if got == taken || strings.HasSuffix(got, ":0") {
		t.Fatalf("addrOrFree(%q) = %q", taken, got)
	}
	if again, err := net.Listen("tcp", got); err != nil {
		t.Fatalf("%s is not free: %v", got, err)
	} else {
		again.Close()
	}
	if got := addrOrFree(taken, "127.0.0.1:8200"); got != taken {
		t.Fatalf("an explicit address was replaced: %s", got)
	}
	if got := addrOrFree("127.0.0.1:0", "127.0.0.1:8200"); strings.HasSuffix(got, ":0") || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Fatalf("any free port gave %s", got)
	}
}
