package credentials

import (
	"strings"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

// maxCallerNames bounds the cache of entity names; past it the cache
// starts over, which costs one lookup per caller.
const maxCallerNames = 4096

// callerNames caches the names of the Vault entities that call the broker,
// so that recording who used a credential costs no call to Vault's core on
// the hot path.
type callerNames struct {
	// mu guards names.
	mu    sync.Mutex
	names map[string]string
}

// callerOf names who makes req, for last_used_by: the Vault entity (by
// name, e.g. orgs-acme-agent-billing for an agent) or, for tokens without
// one, the token's display name.
func (b *backend) callerOf(req *logical.Request) string {
	if req.EntityID == "" {
		return tokenLabel(req.DisplayName, req.ClientTokenAccessor)
	}
	return b.callers.name(b.System(), req.EntityID)
}

// tokenLabel names a token without an entity. Vault's default display
// names ("token", "root") say nothing of which token called; the start of
// its accessor (not a secret) lets an operator look it up.
func tokenLabel(displayName, accessor string) string {
	short := accessor
	if len(short) > 8 {
		short = short[:8]
	}
	switch {
	case displayName == "root":
		return "root token"
	case (displayName == "" || displayName == "token") && short != "":
		return "token " + short + "…"
	case displayName == "":
		return "unknown"
	}
	return displayName
}

func (cn *callerNames) name(sys logical.SystemView, entityID string) string {
	cn.mu.Lock()
	n, ok := cn.names[entityID]
	cn.mu.Unlock()
	if ok {
		return n
	}
	if sys == nil {
		return entityID
	}
	ent, err := sys.EntityInfo(entityID)
	if err != nil || ent == nil {
		// Not cached: the next call tries again.
		return entityID
	}
	n = entityLabel(ent)
	cn.mu.Lock()
	if cn.names == nil || len(cn.names) >= maxCallerNames {
		cn.names = map[string]string{}
	}
	cn.names[entityID] = n
	cn.mu.Unlock()
	return n
}

// entityLabel prefers a name a person recognises: the entity's own name
// unless Vault generated it, then the AppRole role or the login name.
func entityLabel(ent *logical.Entity) string {
	if ent.Name != "" && !strings.HasPrefix(ent.Name, "entity_") {
		return ent.Name
	}
	for _, a := range ent.Aliases {
		if rn := a.Metadata["role_name"]; rn != "" {
			return a.MountType + ":" + rn
		}
		if a.Name != "" {
			return a.MountType + ":" + a.Name
		}
	}
	if ent.Name != "" {
		return ent.Name
	}
	return ent.ID
}
