package credentials

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/oauthserver"
)

// TestMetricsCountRefreshHealth: refreshes are counted by mode and
// outcome, a fenced one apart, and the series read as JSON and as
// Prometheus text, with no credential named in a label.
func TestMetricsCountRefreshHealth(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.connect("secret-project-x")
	mustOK(t, do(t, f.b, f.s, logical.UpdateOperation, "creds/secret-project-x/refresh", nil))
	f.clock.advance(time.Hour)
	if _, err := f.b.oauthAccessToken(context.Background(), deposedStorage{f.s}, "secret-project-x"); err == nil {
		t.Fatal("a deposed node refreshed")
	}

	values := mustOK(t, do(t, f.b, f.s, logical.ReadOperation, "metrics", nil)).Data
	for key, want := range map[string]float64{
		"credentials_refreshes_total{mode=forced,outcome=ok}":     1,
		"credentials_refreshes_total{mode=on_use,outcome=fenced}": 1,
		"credentials_grants_held_in_memory":                       0,
	} {
		if got, _ := values[key].(float64); got != want {
			t.Errorf("%s = %v, want %v (all: %v)", key, values[key], want, values)
		}
	}
	resp := mustOK(t, do(t, f.b, f.s, logical.ReadOperation, "metrics", map[string]interface{}{"format": "prometheus"}))
	text, _ := resp.Data[logical.HTTPRawBody].([]byte)
	if !strings.Contains(string(text), "# TYPE credentials_refreshes_total counter") || resp.Data[logical.HTTPContentType] == nil {
		t.Errorf("the Prometheus answer: %q", text)
	}
	if strings.Contains(string(text), "secret-project-x") {
		t.Error("a label names a credential")
	}
}
