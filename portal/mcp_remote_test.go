package portal

import "testing"

// A remote server's step-up (403 with insufficient_scope) names the scope
// the grant lacks; other 403s name none.
func TestInsufficientScope(t *testing.T) {
	for challenge, want := range map[string]string{
		`Bearer error="insufficient_scope", scope="files:write"`: "files:write",
		`Bearer error="insufficient_scope"`:                      "(not named)",
		`Bearer error="invalid_token", scope="files:write"`:      "",
		`Basic realm="x"`: "",
		``:                "",
	} {
		if got := insufficientScope([]string{challenge}); got != want {
			t.Errorf("%q: %q, want %q", challenge, got, want)
		}
	}
}
