package credentials

import (
	"strings"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/contract"
)

// maxCallerNames bounds the cache of entity names; past it the cache
// starts over, which costs one lookup per caller.
const maxCallerNames = 4096

// callerNames caches what the broker needs of the Vault entities that
// call it (a name for last_used_by, the agent it is, if any), so that a
// call costs no call to Vault's core for them on the hot path. Neither
// changes for an entity: an agent made again is a new entity.
type callerNames struct {
	// mu guards names.
	mu    sync.Mutex
	names map[string]callerInfo
}

type callerInfo struct {
	label string
	// agent is the agent's short name, "" for an entity that is none.
	agent string
}

// callerOf names who makes req, for last_used_by: the Vault entity (by
// name, e.g. orgs-acme-agent-billing for an agent) or, for tokens without
// one, the token's display name.
func (b *backend) callerOf(req *logical.Request) string {
	if req.EntityID == "" {
		return tokenLabel(req.DisplayName, req.ClientTokenAccessor)
	}
	return b.callers.info(b.System(), req.EntityID).label
}

// agentOf names the agent making req ("" for a caller that is not one):
// its entity's metadata, written by agent provisioning.
func (b *backend) agentOf(req *logical.Request) string {
	if req.EntityID == "" {
		return ""
	}
	return b.callers.info(b.System(), req.EntityID).agent
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

func (cn *callerNames) info(sys logical.SystemView, entityID string) callerInfo {
	cn.mu.Lock()
	n, ok := cn.names[entityID]
	cn.mu.Unlock()
	if ok {
		return n
	}
	if sys == nil {
		return callerInfo{label: entityID}
	}
	ent, err := sys.EntityInfo(entityID)
	if err != nil || ent == nil {
		// Not cached: the next call tries again.
		return callerInfo{label: entityID}
	}
	n = callerInfo{label: entityLabel(ent)}
	if a := ent.Metadata[contract.MetaAgent]; agentNamePattern.MatchString(a) {
		n.agent = a
	}
	cn.mu.Lock()
	if cn.names == nil || len(cn.names) >= maxCallerNames {
		cn.names = map[string]callerInfo{}
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
