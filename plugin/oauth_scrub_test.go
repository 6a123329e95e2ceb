package credentials

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/oauthserver"
)

// echoingProvider is a sloppy provider's token and revocation endpoint: it
// refuses every request with status and code, and quotes the whole request
// back in error_description (and in the error code itself when inCode),
// both as values and form-encoded.
func echoingProvider(t *testing.T, status int, code string, inCode bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		keys := make([]string, 0, len(r.PostForm))
		for k := range r.PostForm {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var quoted []string
		for _, k := range keys {
			quoted = append(quoted, k+"="+r.PostForm.Get(k))
		}
		desc := "you sent " + strings.Join(quoted, " ") + " as " + r.PostForm.Encode()
		answer := code
		if inCode {
			answer += " " + strings.Join(quoted, " ")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": answer, "error_description": desc})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// lockedBuffer collects a logger's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// outcome is everything a caller sees of one request.
func outcome(resp *logical.Response, err error) string {
	out := fmt.Sprint(err)
	if resp != nil {
		b, _ := json.Marshal(resp.Data)
		out += " " + string(b)
	}
	return out
}

// TestProviderTextIsScrubbedOfSentSecrets: a provider quoting the request
// back in its error puts none of the secrets the engine sent (refresh and
// access token, client secret, code, PKCE verifier) into a response, a
// stored refresh error, a revocation receipt or the log.
func TestProviderTextIsScrubbedOfSentSecrets(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		status int
		code   string
		inCode bool
	}{
		{"grant refused", http.StatusBadRequest, "invalid_grant", false},
		{"provider failing", http.StatusServiceUnavailable, "temporarily_unavailable", false},
		{"secrets in the error code", http.StatusBadRequest, "invalid_request", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newOAuthFixture(t, oauthserver.Options{}, nil)
			logged := &lockedBuffer{}
			f.b.logger = hclog.New(&hclog.LoggerOptions{Output: logged, Level: hclog.Trace})
			f.connect("c")
			grant := f.cred("c").OAuth
			f.createCred("d")
			approved := f.authorize(f.startConnect("d")["auth_url"].(string))
			pending, err := getPendingConnect(ctx, f.s, "d")
			if err != nil || pending == nil {
				t.Fatalf("pending connect: %v", err)
			}
			// URL-encoding changes this one: the encoded copy goes too.
			const imported = "CANARY/imported+refresh=token-0123456789"
			secrets := map[string]string{
				"refresh token":      grant.RefreshToken,
				"access token":       grant.AccessToken,
				"client secret":      testClientSecret,
				"authorization code": approved.Get("code"),
				"PKCE verifier":      pending.Verifier,
				"imported token":     imported,
			}

			echo := echoingProvider(t, tc.status, tc.code, tc.inCode)
			f.writeService("idp", map[string]interface{}{"token_url": echo.URL, "revoke_url": echo.URL})
			var outputs []string
			call := func(op logical.Operation, path string, data map[string]interface{}) {
				resp, err := doErr(f.b, f.s, op, path, data)
				outputs = append(outputs, outcome(resp, err))
			}
			call(logical.UpdateOperation, "creds/d/callback", map[string]interface{}{"code": approved.Get("code"), "state": approved.Get("state")})
			call(logical.UpdateOperation, "creds/c/refresh", nil)
			_, err = f.b.oauthAccessToken(ctx, f.s, "c")
			outputs = append(outputs, fmt.Sprint(err))
			call(logical.ReadOperation, "creds/c", nil)
			stored := f.cred("c")
			outputs = append(outputs, stored.OAuth.RefreshError, stored.StateReason)
			call(logical.CreateOperation, "creds/imp", map[string]interface{}{"type": "oauth2", "service": "idp", "app": "idp-app", "refresh_token": imported})
			call(logical.UpdateOperation, "creds/c/disconnect", nil)
			outputs = append(outputs, logged.String())

			if !strings.Contains(stored.OAuth.RefreshError, "[redacted]") {
				t.Errorf("the refresh error does not show the provider's text scrubbed: %q", stored.OAuth.RefreshError)
			}
			for what, secret := range secrets {
				for _, out := range outputs {
					if strings.Contains(out, secret) || strings.Contains(out, strings.NewReplacer("/", "%2F", "+", "%2B", "=", "%3D").Replace(secret)) {
						t.Errorf("the %s appears in: %s", what, out)
					}
				}
			}
		})
	}
}
