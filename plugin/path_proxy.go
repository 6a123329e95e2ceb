package credentials

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"sort"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathProxy(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "proxy/" + credNameSegment("name") + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "credentials",
			OperationVerb:   "proxy",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {
				Type:        framework.TypeString,
				Description: "The credential to call the service with.",
				Required:    true,
			},
			"method": {
				Type:          framework.TypeString,
				Description:   "HTTP method, upper case: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS.",
				Default:       http.MethodGet,
				AllowedValues: []interface{}{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"},
			},
			"path": {
				Type:        framework.TypeString,
				Description: "Path with query, relative to the service's first base URL (/v1/balance?limit=3), or an absolute URL under one of its base_urls.",
				Required:    true,
			},
			"headers": {
				Type:        framework.TypeHeader,
				Description: "Request headers, e.g. {\"Content-Type\": \"application/json\"} or Content-Type:application/json. Authorization, cookies, X-Vault-* and hop-by-hop headers are dropped.",
			},
			"body": {
				Type:        framework.TypeString,
				Description: "Request body, base64-encoded (standard encoding), at most broker_max_body bytes decoded.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback: b.pathProxyWrite,
				Summary:  "Call the credential's service with the credential injected.",
				Responses: map[int][]framework.Response{
					http.StatusOK: {{
						Description: "The service's answer.",
						Fields: map[string]*framework.FieldSchema{
							"status":        {Type: framework.TypeInt, Description: "The service's HTTP status."},
							"headers":       {Type: framework.TypeHeader, Description: "The service's response headers, scrubbed of the credential."},
							"body":          {Type: framework.TypeString, Description: "The service's response body, base64-encoded, scrubbed of the credential."},
							"redirect_path": {Type: framework.TypeString, Description: "For a redirect within the service's first base URL: its path relative to that URL."},
						},
					}},
				},
			},
		},
		HelpSynopsis:    pathProxyHelpSyn,
		HelpDescription: pathProxyHelpDesc,
	}}
}

func (b *backend) pathProxyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateCredName(name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	if msg := unknownFields(req, d); msg != "" {
		return logical.ErrorResponse(msg), nil
	}
	method := d.Get("method").(string)
	if !brokerMethods[method] {
		return logical.ErrorResponse("method must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS in upper case"), nil
	}
	header, _ := d.Get("headers").(http.Header)

	// The configuration is cached, so a call costs one storage read: the
	// credential. Each read is a round trip from the plugin to Vault, and
	// the broker's latency is mostly such round trips.
	cfg, err := b.brokerConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	c, err := getCredential(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	body, err := decodeProxyBody(d.Get("body").(string), cfg.BrokerMaxBody)
	if err != nil {
		return brokerResult(err)
	}
	if c == nil {
		return nil, logical.CodedError(http.StatusNotFound, "credential "+name+" does not exist")
	}
	defer zeroCredentialFile(c)
	svc, err := b.brokerService(ctx, req.Storage, c.Service)
	if err != nil {
		return nil, err
	}
	if svc == nil {
		return logical.ErrorResponse("service %q of credential %q no longer exists", c.Service, name), nil
	}

	out, err := b.brokerCall(ctx, req.Storage, cfg, svc, c, brokerRequest{
		method: method,
		path:   d.Get("path").(string),
		header: header,
		body:   body,
	})
	if err != nil {
		return brokerResult(err)
	}
	b.lastUse.record(name, b.callerOf(req), b.now().UTC())

	data := map[string]interface{}{
		"status":  out.status,
		"headers": headerMap(out.header),
		"body":    base64.StdEncoding.EncodeToString(out.body),
	}
	clear(out.body)
	if out.redirectPath != "" {
		data["redirect_path"] = out.redirectPath
	}
	return &logical.Response{Data: data}, nil
}

// decodeProxyBody decodes the base64 body, refusing one over max bytes
// before decoding it.
func decodeProxyBody(raw string, max int64) ([]byte, error) {
	if raw == "" {
		return nil, nil
	}
	if int64(len(raw)) > int64(base64.StdEncoding.EncodedLen(int(min(max, maxBrokerMaxBody))))+4 {
		return nil, tooLarge(max)
	}
	body, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, badRequest("body must be base64 (standard encoding)")
	}
	if int64(len(body)) > max {
		return nil, tooLarge(max)
	}
	return body, nil
}

func tooLarge(max int64) error {
	return &brokerError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf(
		"request body is larger than broker_max_body (%d bytes)", max)}
}

// headerMap is h as plain JSON-friendly data, names sorted for stable output.
func headerMap(h http.Header) map[string]interface{} {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	m := make(map[string]interface{}, len(h))
	for _, k := range names {
		m[k] = append([]string(nil), h[k]...)
	}
	return m
}

const pathProxyHelpSyn = `Call a service with a credential, without seeing the credential (the broker).`

const pathProxyHelpDesc = `
The broker makes one HTTP request to the credential's service on the caller's
behalf and injects the credential as the service's catalog entry says: an API
key as a bearer token, a named header (x-api-key) or basic auth; a user name
and password as basic auth; an OAuth 2 access token, refreshed when due; an
access token minted from a GCP service-account key. The caller never sees the
secret: it is scrubbed from the answer's headers and body, also in its URL-,
JSON- and base64-encoded forms.

In: method (default GET), path (with query; relative to the service's first
base URL, or an absolute URL under one of its base_urls), headers, body
(base64). Out: status, headers, body (base64), and redirect_path for a
redirect within the service.

Guard rails: only the service's base_urls are called, with no '.' or '..'
path segments; no redirect is followed (it is returned, credential-free);
the caller's Authorization, cookies, X-Vault-* and hop-by-hop headers are
dropped; each call is bounded by broker_timeout and broker_max_body (config);
loopback, private and link-local addresses are refused, checked on the
address actually dialled, unless a custom service sets allow_private_targets.
The call records the credential's last use and the caller (Vault entity).

Agents get update on orgs/<org>/proxy/<name> only, optionally narrowed with
allowed_parameters on method and path:

  vault write orgs/acme/proxy/stripe method=GET path=/v1/balance
  vault write orgs/acme/proxy/anthropic method=POST path=/v1/messages \
      headers=Content-Type:application/json body=$(base64 -w0 request.json)
`
