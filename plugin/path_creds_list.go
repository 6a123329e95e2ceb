package credentials

import (
	"context"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func (b *backend) pathCredsList(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	typ := d.Get("type").(string)
	if typ != "" && !slices.Contains(credTypes, typ) {
		return nil, userErrorf("type must be one of %s", strings.Join(credTypes, ", "))
	}
	status := d.Get("status").(string)
	if status != "" && !slices.Contains(statuses, status) {
		return nil, userErrorf("status must be one of %s", strings.Join(statuses, ", "))
	}
	limit := d.Get("limit").(int)
	if limit < 0 || limit > maxListLimit {
		return nil, userErrorf("limit must be between 1 and %d", maxListLimit)
	}
	if limit == 0 {
		limit = maxListLimit
	}
	after := d.Get("after").(string)
	q := strings.ToLower(d.Get("q").(string))

	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	lines, err := b.index.Lines(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	now := b.now()
	keys := []string{}
	keyInfo := map[string]interface{}{}
	// Names are sorted, so the page starts right after `after`.
	start := 0
	if after != "" {
		start = searchAfter(lines, after)
	}
	for _, l := range lines[start:] {
		if len(keys) == limit {
			break
		}
		if typ != "" && l.Type != typ {
			continue
		}
		if q != "" && !strings.Contains(l.Name, q) {
			continue
		}
		sum := l.Summary
		b.lastUse.overlay(l.Name, &sum)
		st, reason := sum.Status(now, cfg.WarnBefore)
		if status != "" && st != status {
			continue
		}
		info := credKeyInfo{
			Type:         sum.Type,
			Service:      sum.Service,
			Status:       st,
			StatusReason: reason,
			LastUsedAt:   formatTime(sum.LastUsedAt),
			Description:  sum.Description,
			ID:           sum.ID,
		}
		if sum.ExpiresAt != nil {
			info.ExpiresAt = formatTime(*sum.ExpiresAt)
		}
		keys = append(keys, l.Name)
		keyInfo[l.Name] = info
	}
	return logical.ListResponseWithInfo(keys, keyInfo), nil
}

// credKeyInfo is one credential's key_info in LIST creds/. Empty fields are
// left out: with thousands of credentials the response is encoded as JSON
// three times between the plugin and the caller, so its size is its cost.
type credKeyInfo struct {
	Type         string `json:"type"`
	Service      string `json:"service"`
	Status       string `json:"status"`
	StatusReason string `json:"status_reason,omitempty"`
	LastUsedAt   string `json:"last_used_at,omitempty"`
	ExpiresAt    string `json:"expires_at,omitempty"`
	Description  string `json:"description,omitempty"`
	// ID lets agent managers record which credential an agent is given.
	ID string `json:"id,omitempty"`
}

// searchAfter returns the index of the first line whose name sorts after
// name.
func searchAfter(lines []indexLine, name string) int {
	lo, hi := 0, len(lines)
	for lo < hi {
		mid := (lo + hi) / 2
		if lines[mid].Name <= name {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

const pathCredsListHelpSyn = `List the organization's credentials.`

const pathCredsListHelpDesc = `
Lists credential names with, for each, its type, service, status,
status_reason, last_used_at, expires_at and description (vault list -detailed).
Filters: type (oauth2, api_key, password, file), q (case-insensitive part of
the name), status (active, needs_attention, expired, disconnected). Paging:
after (the last name of the previous page) and limit. They are query
parameters of the LIST request, which vault list does not send; use the HTTP
API for them.

  vault list -detailed orgs/acme/creds
  curl -s -H "X-Vault-Token: $VAULT_TOKEN" "$VAULT_ADDR/v1/orgs/acme/creds?list=true&type=api_key&q=stripe"
`
