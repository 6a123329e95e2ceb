package credentials

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/contract"
)

// Agents and re-created credentials. An agent's Vault policy names the
// credentials it may use by name, and Vault's ACL cannot tell a credential
// from a later one of the same name. So the agent's entity also records,
// in its metadata, the ID each credential had when the agent was given it
// (credential_ids: "name:id,..."; "-" for a name that did not exist then),
// and the broker refuses a credential whose ID is not the recorded one.

func newCredentialID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic("credentials: no randomness for a credential ID: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// checkAgentGrant refuses a call by an agent that was given an earlier
// credential of this name (or none). Callers that are not agents, agents
// provisioned before credential IDs, and credentials from before IDs are
// left to Vault's ACL alone.
func (b *backend) checkAgentGrant(req *logical.Request, c *credential) error {
	if req.EntityID == "" || c.ID == "" || b.System() == nil {
		return nil
	}
	ent, err := b.System().EntityInfo(req.EntityID)
	if err != nil {
		return fmt.Errorf("looking up the caller's entity: %w", err)
	}
	if ent == nil || ent.Metadata[contract.MetaAgent] == "" {
		return nil
	}
	grants, ok := ent.Metadata[contract.MetaCredentialIDs]
	if !ok {
		return nil
	}
	for _, g := range strings.Split(grants, ",") {
		name, id, _ := strings.Cut(g, ":")
		if name != c.Name {
			continue
		}
		if id == "" || id == c.ID {
			return nil
		}
		break
	}
	return &userError{Status: http.StatusForbidden, Permanent: true, Msg: fmt.Sprintf(
		"credential %s was created after agent %s was given that name: an agent manager gives it to the agent again (delete and create the agent)",
		c.Name, ent.Metadata[contract.MetaAgent])}
}

// usableCredential reads credential name for a caller about to use or
// describe it (the broker, mail, an agent's tool list): 404 when there is
// none, and the agent-grant check. Its errors are for brokerResult; the
// caller zeroes the credential's file.
func (b *backend) usableCredential(ctx context.Context, req *logical.Request, name string) (*credential, error) {
	c, err := getCredential(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, logical.CodedError(http.StatusNotFound, "credential "+name+" does not exist")
	}
	if err := b.checkAgentGrant(req, c); err != nil {
		zeroCredentialFile(c)
		return nil, err
	}
	return c, nil
}
