package credentials

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// brokerInputs caches what every brokered call reads besides the
// credential: the mount's configuration and custom service definitions.
// Each storage read is a round trip from the plugin to Vault and they were
// most of the broker's cost over Vault's own request path, while both
// change rarely and hold no secret. The credential itself is read on every
// call, so a replaced or deleted secret is never used again.
//
// A generation counter, bumped after every write to config or services/
// (and when another node's write invalidates those keys), decides whether
// a cached value may be used: a value is stored with the generation read
// before it was read, so a write that races with the read leaves it stale.
type brokerInputs struct {
	gen atomic.Uint64

	// mu guards the fields below.
	mu       sync.Mutex
	cfg      *mountConfig
	cfgGen   uint64
	services map[string]cachedService
}

type cachedService struct {
	svc *service
	gen uint64
}

func (bi *brokerInputs) bump() { bi.gen.Add(1) }

// invalidateKey is called for storage keys another node changed.
func (bi *brokerInputs) invalidateKey(key string) {
	if key == configStorageKey || strings.HasPrefix(key, serviceStoragePrefix) {
		bi.bump()
	}
}

// brokerConfig returns the mount's configuration for the broker; callers
// must not modify it.
func (b *backend) brokerConfig(ctx context.Context, s logical.Storage) (*mountConfig, error) {
	bi := &b.brokerInputs
	gen := bi.gen.Load()
	bi.mu.Lock()
	if bi.cfg != nil && bi.cfgGen == gen+1 {
		cfg := bi.cfg
		bi.mu.Unlock()
		return cfg, nil
	}
	bi.mu.Unlock()
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	bi.mu.Lock()
	// Stored as gen+1 so that the zero value never matches.
	bi.cfg, bi.cfgGen = cfg, gen+1
	bi.mu.Unlock()
	return cfg, nil
}

// brokerService returns a built-in or custom service for the broker;
// callers must not modify it.
func (b *backend) brokerService(ctx context.Context, s logical.Storage, name string) (*service, error) {
	if svc, ok := builtinServices[name]; ok {
		return svc, nil
	}
	bi := &b.brokerInputs
	gen := bi.gen.Load()
	bi.mu.Lock()
	if cs, ok := bi.services[name]; ok && cs.gen == gen+1 {
		bi.mu.Unlock()
		return cs.svc, nil
	}
	bi.mu.Unlock()
	svc, err := b.getService(ctx, s, name)
	if err != nil || svc == nil {
		return svc, err
	}
	bi.mu.Lock()
	if bi.services == nil || len(bi.services) >= maxCachedServices {
		bi.services = map[string]cachedService{}
	}
	bi.services[name] = cachedService{svc: svc, gen: gen + 1}
	bi.mu.Unlock()
	return svc, nil
}

// maxCachedServices bounds the cache; past it, it starts over.
const maxCachedServices = 1024

// changesBrokerInputs wraps the write operations of paths (config,
// services/) so that each one, once done, makes the broker read again.
func (b *backend) changesBrokerInputs(paths []*framework.Path) []*framework.Path {
	for _, p := range paths {
		for op, h := range p.Operations {
			po, ok := h.(*framework.PathOperation)
			if !ok || op == logical.ReadOperation || op == logical.ListOperation || po.Callback == nil {
				continue
			}
			cb := po.Callback
			po.Callback = func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
				defer b.brokerInputs.bump()
				return cb(ctx, req, d)
			}
		}
	}
	return paths
}
