package browser

import (
	"fmt"
	"io"
	"net/http"
	"testing"
)

// BenchmarkCredentialsPage measures the credentials page of an org with
// 200 credentials (one page), through the real Vault: sign-in cookie
// opened, orgs listed, credentials and services listed, capabilities
// checked, the page rendered.
//
//	go test ./testing/browser -run '^$' -bench CredentialsPage
func BenchmarkCredentialsPage(b *testing.B) {
	const benchOrg = "beta"
	root := st.root()
	for i := 0; i < 200; i++ {
		if _, err := root.Logical().Write(fmt.Sprintf("orgs/%s/creds/bench-%03d", benchOrg, i), map[string]any{
			"type": "api_key", "service": "stripe", "api_key": fmt.Sprintf("sk_bench_%d", i),
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() {
		for i := 0; i < 200; i++ {
			_, _ = root.Logical().Delete(fmt.Sprintf("orgs/%s/creds/bench-%03d", benchOrg, i))
		}
	})
	c := portalClient(b, adminUser, adminPass)
	b.ResetTimer()
	for b.Loop() {
		resp, err := c.Get(st.url("/orgs/" + benchOrg + "/creds"))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
