package egress

import (
	"net/http"
	"testing"
)

// TestBasicWithAFixedUser: Mailgun's convention, the user name api and the
// key as password; the pair is among what is scrubbed.
func TestBasicWithAFixedUser(t *testing.T) {
	req, _ := http.NewRequest(http.MethodGet, "https://api.mailgun.net/v3/domains", nil)
	inj := Injection{Style: StyleBasic, User: "api"}
	m := Material{Secret: []byte("key-123")}
	if err := Inject(req, inj, m); err != nil {
		t.Fatal(err)
	}
	if u, p, ok := req.BasicAuth(); !ok || u != "api" || p != "key-123" {
		t.Fatalf("basic auth %q:%q", u, p)
	}
	found := false
	for _, pt := range Plaintexts(inj, m) {
		found = found || string(pt) == "api:key-123"
	}
	if !found {
		t.Fatal("the user:key pair is not scrubbed")
	}
}
