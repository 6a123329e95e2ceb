package portal

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The proxy's choice of credential: by base URL (scheme, host, port, and
// the longest base path the request falls under), the named one where
// several serve the same URL, and a refusal that says why otherwise.
func TestProxyChoosesTheCredentialByBaseURL(t *testing.T) {
	creds := []*agentCred{
		{Name: "gh", BaseURL: "https://api.example.com", HTTP: true},
		{Name: "gh-uploads", BaseURL: "https://api.example.com/uploads", HTTP: true},
		{Name: "mirror-a", BaseURL: "https://git.example.com/org", HTTP: true},
		{Name: "mirror-b", BaseURL: "https://git.example.com/org/", HTTP: true},
		{Name: "tools-only", BaseURL: "https://mcp.example.com", HTTP: false},
		{Name: "plain", BaseURL: "http://api.example.com:8080/v1", HTTP: true},
	}
	cases := []struct {
		url, named string
		cred, rest string
		status     int
		msg        string
	}{
		{url: "https://api.example.com/repos/x", cred: "gh", rest: "/repos/x"},
		{url: "https://api.example.com:443/", cred: "gh", rest: "/"},
		{url: "https://api.example.com/uploads/file", cred: "gh-uploads", rest: "/file"},
		{url: "https://api.example.com/uploadsx", cred: "gh", rest: "/uploadsx"},
		{url: "http://api.example.com:8080/v1/items", cred: "plain", rest: "/items"},
		{url: "https://git.example.com/org/repo.git/info/refs", status: http.StatusConflict, msg: "X-Broker-Credential"},
		{url: "https://git.example.com/org/repo.git", named: "mirror-b", cred: "mirror-b", rest: "/repo.git"},
		{url: "https://git.example.com/org/repo.git", named: "gh", status: http.StatusForbidden, msg: "credential gh"},
		{url: "https://git.example.com/other", status: http.StatusForbidden, msg: "not under the base URL"},
		{url: "https://mcp.example.com/mcp", status: http.StatusForbidden, msg: "none of this token's credentials"},
		{url: "http://api.example.com/repos", status: http.StatusForbidden, msg: "none of this token's credentials"},
	}
	for _, c := range cases {
		target, _ := url.Parse(c.url)
		cred, rest, fail := choose(credsServing(creds, target), target, c.named)
		switch {
		case c.status != 0 && (fail == nil || fail.Status != c.status || !strings.Contains(fail.Msg, c.msg)):
			t.Errorf("%s (%q): %v, want %d %q", c.url, c.named, fail, c.status, c.msg)
		case c.status == 0 && (fail != nil || cred != c.cred || rest != c.rest):
			t.Errorf("%s (%q): %q %q %v, want %q %q", c.url, c.named, cred, rest, fail, c.cred, c.rest)
		}
	}
}

// A placeholder names the credential where the program sends its own
// credential, and nowhere else.
func TestProxyPlaceholderNamesTheCredential(t *testing.T) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:ghp_broker-cred-gh-work"))
	for _, c := range []struct {
		header http.Header
		want   string
	}{
		{http.Header{"Authorization": {"Bearer sk-broker-cred-openai-main"}}, "openai-main"},
		{http.Header{"Authorization": {"token ghp_broker-cred-gh-work"}}, "gh-work"},
		{http.Header{"Authorization": {basic}}, "gh-work"},
		{http.Header{"X-Api-Key": {"broker-cred-anthropic"}}, "anthropic"},
		{http.Header{"X-Custom": {"broker-cred-elsewhere"}}, ""},
		{http.Header{"Authorization": {"Bearer sk-real-looking-key"}}, ""},
	} {
		if got := placeholderCred(c.header); got != c.want {
			t.Errorf("%v: %q, want %q", c.header, got, c.want)
		}
	}
}
