package credentials

import (
	"context"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Reading proxy/<name> or mail/<name> describes the credential to an agent
// that may use it: what the service is, where it answers and whether the
// credential works now. The portal's MCP server builds each agent's tools
// from it, with the agent's own token, so Vault's ACL decides which
// credentials an agent sees exactly as it decides which it may use. It
// holds no secret.

const (
	useProxy = "proxy"
	useMail  = "mail"
)

// useReadOperation is the read operation of proxy/<name> and mail/<name>.
func (b *backend) useReadOperation() framework.OperationHandler {
	return &framework.PathOperation{
		Callback: b.pathUseRead,
		Summary:  "Describe the credential to an agent that may use it: its service, base URL, status and how it is used.",
		Responses: map[int][]framework.Response{
			http.StatusOK: {{
				Description: "The credential as an agent uses it; no secret.",
				Fields: map[string]*framework.FieldSchema{
					"name":                 {Type: framework.TypeString, Description: "The credential's name."},
					"type":                 {Type: framework.TypeString, Description: "oauth2, api_key, password or file."},
					"description":          {Type: framework.TypeString, Description: "What the credential is for."},
					"service":              {Type: framework.TypeString, Description: "The service's name in the catalog."},
					"service_display_name": {Type: framework.TypeString, Description: "The service's name for people."},
					"service_description":  {Type: framework.TypeString, Description: "What the service is."},
					"docs_url":             {Type: framework.TypeString, Description: "The service's API documentation."},
					"base_url":             {Type: framework.TypeString, Description: "The service's first base URL: call paths are relative to it."},
					"status":               {Type: framework.TypeString, Description: "active, needs_attention, expired or disconnected."},
					"status_reason":        {Type: framework.TypeString, Description: "Why, when not active."},
					"use":                  {Type: framework.TypeString, Description: "proxy (HTTP calls through proxy/<name> or the edge) or mail (messages through mail/<name>)."},
					"mcp_url":              {Type: framework.TypeString, Description: "The service's remote MCP server, whose tools the portal's MCP server offers (proxy/<name>/TOOL/<tool>)."},
				},
			}},
		},
	}
}

func (b *backend) pathUseRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateCredName(name); err != nil {
		return nil, err
	}
	c, err := b.usableCredential(ctx, req, name)
	if err != nil {
		return nil, err
	}
	defer zeroCredentialFile(c)
	svc, err := b.brokerService(ctx, req.Storage, c.Service)
	if err != nil {
		return nil, err
	}
	cfg, err := b.brokerConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	sum := c.Summary()
	status, reason := sum.Status(b.now(), cfg.WarnBefore)
	use := useProxy
	if c.Type == typePassword && c.Service == smtpService {
		use = useMail
	}
	data := map[string]interface{}{
		"name":          c.Name,
		"type":          c.Type,
		"description":   c.Description,
		"service":       c.Service,
		"status":        status,
		"status_reason": reason,
		"use":           use,
	}
	if svc != nil {
		data["service_display_name"] = svc.DisplayName
		data["service_description"] = svc.Description
		data["docs_url"] = svc.DocsURL
		if len(svc.BaseURLs) > 0 {
			data["base_url"] = svc.BaseURLs[0]
		}
		if svc.MCPURL != "" {
			data["mcp_url"] = svc.MCPURL
		}
	}
	return &logical.Response{Data: data}, nil
}
