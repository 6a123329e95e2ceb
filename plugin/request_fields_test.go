package credentials

import (
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestCLIFieldForms: the forms the vault CLI sends for object and header
// fields are taken (before, injection='{...}' answered "expected a map,
// got 'string'", and headers=Content-Type:application/json "invalid
// character 'C'").
func TestCLIFieldForms(t *testing.T) {
	b, s, up := brokerFixture(t)
	resp := do(t, b, s, logical.CreateOperation, "services/billing", map[string]interface{}{
		"types":     "api_key",
		"base_urls": up.URL,
		"injection": `{"api_key":{"style":"header","header":"X-Api-Key","format":"{secret}"}}`,
		"verify":    `{"method":"GET","url":"` + up.URL + `/v1/balance","expect_status":200}`,
	})
	mustOK(t, resp)
	got := mustOK(t, do(t, b, s, logical.ReadOperation, "services/billing", nil))
	if inj := got.Data["injection"].(map[string]interface{})["api_key"].(map[string]interface{}); inj["header"] != "X-Api-Key" {
		t.Errorf("injection = %v", inj)
	}
	bad := do(t, b, s, logical.CreateOperation, "services/broken", map[string]interface{}{"types": "api_key", "oauth": "not json"})
	if !bad.IsError() || !strings.Contains(bad.Error().Error(), "oauth must be a JSON object") {
		t.Errorf("text that is not JSON: %v", bad)
	}

	// One header per headers= (the CLI makes a list of repeated keys).
	for _, headers := range []interface{}{"X-Trace:abc", []interface{}{"X-Trace:abc", "Content-Type:application/json"}} {
		resp, err := proxyCall(b, s, "key", map[string]interface{}{"method": "POST", "path": "/echo", "headers": headers})
		if err != nil || resp.IsError() {
			t.Fatalf("name:value headers %v: %v %v", headers, resp, err)
		}
		if !strings.Contains(resp.Data["body_text"].(string), `"X-Trace":["abc"]`) {
			t.Errorf("headers %v did not reach the service: %.300s", headers, resp.Data["body_text"])
		}
	}
}
