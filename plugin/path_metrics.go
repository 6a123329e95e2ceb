package credentials

import (
	"context"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathMetrics(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "metrics$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "credentials",
			OperationSuffix: "metrics",
		},
		Fields: map[string]*framework.FieldSchema{
			"format": {
				Type:          framework.TypeString,
				Description:   "json for the CLI, prometheus for a scraper (the text exposition format). Example: format=prometheus",
				Default:       "json",
				AllowedValues: []interface{}{"json", "prometheus"},
				Query:         true,
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{Callback: b.pathMetricsRead, Summary: "Read this mount's refresh and broker health."},
		},
		HelpSynopsis:    "Refresh and broker health of this organization's mount, for operators.",
		HelpDescription: pathMetricsHelpDesc,
	}}
}

func (b *backend) pathMetricsRead(_ context.Context, _ *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	switch d.Get("format").(string) {
	case "prometheus":
		text, err := b.metrics.text()
		if err != nil {
			return nil, err
		}
		return &logical.Response{Data: map[string]interface{}{
			logical.HTTPContentType: "text/plain; version=0.0.4; charset=utf-8",
			logical.HTTPRawBody:     text,
			logical.HTTPStatusCode:  http.StatusOK,
		}}, nil
	case "json":
		values, err := b.metrics.values()
		if err != nil {
			return nil, err
		}
		return &logical.Response{Data: values}, nil
	}
	return nil, userErrorf("format must be json or prometheus")
}

const pathMetricsHelpDesc = `
The mount's health for operators: OAuth refreshes by mode and outcome
(credentials_refreshes_total), the grants due at the last scheduled tick and
how long the oldest had waited (credentials_refresh_due_backlog,
credentials_refresh_tick_lag_seconds), refreshed grants held in memory
because storing failed, last uses not stored yet, and calls through the
broker by path and outcome. No label names a credential. Vault does not
collect an external plugin's telemetry, so the series are read here; they
are this node's, since the last start of the plugin.

  vault read orgs/acme/metrics
  curl -s -H "X-Vault-Token: $VAULT_TOKEN" "$VAULT_ADDR/v1/orgs/acme/metrics?format=prometheus"
`
