package credentials

import (
	"context"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// refresh-failing retries, at once, every grant whose refresh is failing:
// after a provider's outage a person need not retry credentials one by one.
// Grants the provider ended (reconnect required) are left: only a
// reconnect helps them.

// refreshFailingConcurrency bounds the provider calls it makes at once.
const refreshFailingConcurrency = 4

func pathRefreshFailing(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern:      "refresh-failing$",
		DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "credentials", OperationVerb: "refresh", OperationSuffix: "failing"},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback: b.pathRefreshFailing,
				// Providers are called: on a performance standby, Vault
				// forwards this to the node that can store the answers.
				ForwardPerformanceStandby: true,
				Summary:                   "Retry now every OAuth grant whose refresh is failing.",
				Responses: map[int][]framework.Response{200: {{
					Description: "What each retry did.",
					Fields: map[string]*framework.FieldSchema{
						"refreshed": {Type: framework.TypeCommaStringSlice, Description: "Credentials refreshed."},
						"failed":    {Type: framework.TypeMap, Description: "Credentials whose refresh failed again, with why."},
					},
				}}},
			},
		},
		HelpSynopsis:    "Retry every failing OAuth refresh at once.",
		HelpDescription: pathRefreshFailingHelpDesc,
	}}
}

func (b *backend) pathRefreshFailing(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	lines, err := b.index.Lines(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range lines {
		if l.Type == typeOAuth2 && l.RefreshFailing != "" {
			names = append(names, l.Name)
		}
	}
	var (
		mu        sync.Mutex
		refreshed = []string{}
		failed    = map[string]interface{}{}
		wg        sync.WaitGroup
		slots     = make(chan struct{}, refreshFailingConcurrency)
	)
	for _, name := range names {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			r := b.refreshShared(ctx, req.Storage, name, refreshForced)
			mu.Lock()
			defer mu.Unlock()
			if r.err != nil {
				failed[name] = strings.TrimPrefix(r.err.Error(), "refreshing "+name+": ")
			} else {
				refreshed = append(refreshed, name)
			}
		}()
	}
	wg.Wait()
	sort.Strings(refreshed)
	b.logger.Info("failing grants retried", "refreshed", len(refreshed), "failed", len(failed))
	return &logical.Response{Data: map[string]interface{}{"refreshed": refreshed, "failed": failed}}, nil
}

const pathRefreshFailingHelpDesc = `
Retries now, with bounded concurrency, the refresh of every OAuth grant whose
refresh is failing (a provider outage, a slow token endpoint), instead of
waiting for each one's backoff or retrying creds/<name>/refresh one by one.
Grants the provider ended (reconnect required) are not retried: they need a
reconnect. Answers which were refreshed and which failed again, with why.

  vault write -f orgs/acme/refresh-failing
`
