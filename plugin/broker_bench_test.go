package credentials

import (
	"testing"
)

// BenchmarkProxyCall is one brokered call inside the plugin, over in-memory
// storage, to a local upstream: the plugin's own cost without Vault's
// request path or gRPC storage.
//
//	go test ./plugin -run '^$' -bench BenchmarkProxyCall -benchmem
func BenchmarkProxyCall(b *testing.B) {
	be, s, _ := brokerFixture(b)
	data := map[string]interface{}{"method": "GET", "path": "/v1/ping"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := proxyCall(be, s, "key", data)
		if err != nil || resp.IsError() || resp.Data["status"] != 200 {
			b.Fatalf("call failed: %v %v", resp, err)
		}
	}
}
