package egress

import (
	"net/url"
	"testing"
)

var github = Service{Name: "github", BaseURLs: []string{"https://api.github.com", "https://uploads.github.com"}}

// TestRewriteLink: paging links lead back through the broker, never to the
// service itself, where a client would send its Vault token.
func TestRewriteLink(t *testing.T) {
	target, _ := url.Parse("https://api.github.com/repos/o/r/issues?page=1")
	broker := "https://portal.example/broker/acme/gh"
	in := `<https://api.github.com/repos/o/r/issues?page=2>; rel="next", <https://api.github.com/repos/o/r/issues?page=5>; rel="last", ` +
		`<https://uploads.github.com/x>; rel="upload", <https://docs.github.com/rest>; rel="help"; title="a, b"`
	want := `<https://portal.example/broker/acme/gh/repos/o/r/issues?page=2>; rel="next", <https://portal.example/broker/acme/gh/repos/o/r/issues?page=5>; rel="last", ` +
		`<https://docs.github.com/rest>; rel="help"; title="a, b"`
	if got := RewriteLink(github, target, in, broker); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if got := RewriteLink(github, target, `garbage <x>`, broker); got != "" {
		t.Fatalf("unparseable header kept: %q", got)
	}
	if got := RewriteLocation(github, target, "/repos/o/r/issues?page=3", broker); got != broker+"/repos/o/r/issues?page=3" {
		t.Fatalf("Location: %s", got)
	}
	if got := RewriteLocation(github, target, "https://objects.example/x?sig=1", broker); got != "https://objects.example/x?sig=1" {
		t.Fatalf("Location elsewhere: %s", got)
	}
}
