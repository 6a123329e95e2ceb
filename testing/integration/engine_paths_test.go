package integration

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
)

// engineCall is one operation on one of the engine's paths, relative to the
// mount. {cred} is replaced by a credential's name.
type engineCall struct {
	method string // GET, PUT (write), LIST, DELETE
	path   string
	data   map[string]interface{}
}

// enginePaths is every operation of every path the engine serves,
// destructive ones last. The canary and isolation tests walk all of it, so
// a new path belongs here.
var enginePaths = []engineCall{
	{"GET", "config", nil},
	{"PUT", "config", map[string]interface{}{"warn_before": "168h"}},
	{"LIST", "services/", nil},
	{"GET", "services/stripe", nil},
	{"PUT", "services/custom-api", map[string]interface{}{"types": "api_key", "base_urls": "https://api.custom.example"}},
	{"GET", "services/custom-api", nil},
	{"LIST", "apps/", nil},
	{"GET", "apps/{app}", nil},
	{"PUT", "apps/{app}", map[string]interface{}{"description": "updated"}},
	{"LIST", "creds/", nil},
	{"LIST", "creds/", map[string]interface{}{"type": "api_key", "q": "c"}},
	{"GET", "creds/{cred}", nil},
	{"PUT", "creds/{cred}", map[string]interface{}{"description": "updated"}},
	{"PUT", "creds/{cred}/connect", nil},
	{"PUT", "creds/{cred}/callback", map[string]interface{}{"code": "c", "state": "s"}},
	{"PUT", "creds/{cred}/refresh", nil},
	{"PUT", "creds/{cred}/verify", nil},
	{"PUT", "proxy/{cred}", map[string]interface{}{"method": "GET", "path": "/v1/balance"}},
	{"PUT", "proxy/{cred}/GET/v1/balance", nil},
	{"GET", "proxy/{cred}", nil},
	{"GET", "mail/{cred}", nil},
	{"PUT", "mail/{cred}", map[string]interface{}{"from": "ops@acme.example", "to": "a@acme.example", "text": "t"}},
	{"PUT", "refresh-failing", nil},
	{"GET", "metrics", nil},
	{"PUT", "creds/{cred}/disconnect", nil},
	{"DELETE", "services/custom-api", nil},
	{"DELETE", "creds/{cred}", nil},
	{"DELETE", "apps/{app}", nil},
}

// rawCall sends one engine call with c's token and returns the HTTP status
// and the whole response body, error or not.
func rawCall(t *testing.T, c *api.Client, mount string, call engineCall, cred, app string) (int, []byte) {
	t.Helper()
	path := strings.NewReplacer("{cred}", cred, "{app}", app).Replace(call.path)
	method := call.method
	if method == "LIST" {
		method = "GET"
	}
	req := c.NewRequest(method, "/v1/"+mount+"/"+path)
	if call.method == "LIST" {
		req.Params.Set("list", "true")
		for k, v := range call.data {
			req.Params.Set(k, v.(string))
		}
	} else if call.data != nil {
		if err := req.SetJSONBody(call.data); err != nil {
			t.Fatal(err)
		}
	}
	//lint:ignore SA1019 a raw request is the point: any method, and the status and body as Vault sent them
	resp, err := c.RawRequestWithContext(context.Background(), req)
	if resp == nil {
		t.Fatalf("%s %s: %v", call.method, path, err)
	}
	defer resp.Body.Close()
	body := new(strings.Builder)
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		body.Write(buf[:n])
		if rerr != nil {
			break
		}
	}
	if resp.StatusCode == 0 {
		resp.StatusCode = http.StatusOK
	}
	return resp.StatusCode, []byte(body.String())
}
