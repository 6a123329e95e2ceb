package credentials

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"
)

// objectFields are the fields whose values are JSON objects, by the path
// prefix they belong to. The vault CLI sends them as text
// (injection='{...}', or injection=@injection.json, which it reads), which
// the framework's map type does not take.
var objectFields = map[string][]string{
	serviceStoragePrefix: {"injection", "oauth", "verify", "pricing"},
}

// HandleRequest takes object fields as JSON text and header fields as
// name:value pairs, the forms the vault CLI sends, before the framework
// checks the fields' types.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	if resp := normalizeCLIFields(req); resp != nil {
		return resp, nil
	}
	return b.Backend.HandleRequest(ctx, req)
}

// HandleExistenceCheck does the same: Vault checks existence (and the
// framework the fields' types) before it sends a write.
func (b *backend) HandleExistenceCheck(ctx context.Context, req *logical.Request) (bool, bool, error) {
	if resp := normalizeCLIFields(req); resp != nil {
		// The write itself answers with the message.
		return false, false, nil
	}
	return b.Backend.HandleExistenceCheck(ctx, req)
}

// normalizeCLIFields rewrites req.Data in place; a field that is text but
// not a JSON object is answered with a message that says so.
func normalizeCLIFields(req *logical.Request) *logical.Response {
	if req.Data == nil || (req.Operation != logical.CreateOperation && req.Operation != logical.UpdateOperation) {
		return nil
	}
	for prefix, fields := range objectFields {
		if !strings.HasPrefix(req.Path, prefix) {
			continue
		}
		for _, f := range fields {
			text, ok := req.Data[f].(string)
			if !ok {
				continue
			}
			var obj map[string]interface{}
			dec := json.NewDecoder(strings.NewReader(text))
			dec.UseNumber()
			if err := dec.Decode(&obj); err != nil || obj == nil {
				return logical.ErrorResponse("%s must be a JSON object, e.g. %s='{\"...\": ...}' or %s=@file.json", f, f, f)
			}
			req.Data[f] = obj
		}
	}
	// attachments='[{...}]' or attachments=@attachments.json: a JSON list
	// as text.
	if strings.HasPrefix(req.Path, mailPathPrefix) {
		if text, ok := req.Data["attachments"].(string); ok {
			var list []interface{}
			if err := json.Unmarshal([]byte(text), &list); err != nil {
				return logical.ErrorResponse(`attachments must be a JSON list, e.g. attachments='[{"filename": "report.csv", "content": "<base64>"}]' or attachments=@attachments.json`)
			}
			req.Data["attachments"] = list
		}
	}
	// permissions='{"contents": "read"}' on a GitHub App credential: a JSON
	// object as text (permissions=contents=read pairs pass as they are).
	if strings.HasPrefix(req.Path, credStoragePrefix) {
		if text, ok := req.Data["permissions"].(string); ok && strings.HasPrefix(strings.TrimSpace(text), "{") {
			var obj map[string]interface{}
			if err := json.Unmarshal([]byte(text), &obj); err != nil {
				return logical.ErrorResponse(`permissions must be a JSON object, e.g. permissions='{"contents": "read"}', or pairs, permissions=contents=read,issues=write`)
			}
			req.Data["permissions"] = obj
		}
	}
	// headers=Name:value (or several, comma-separated) from the CLI: the
	// framework reads name:value pairs from a list, JSON from text.
	if strings.HasPrefix(req.Path, "proxy/") {
		if text, ok := req.Data["headers"].(string); ok && !strings.HasPrefix(strings.TrimSpace(text), "{") {
			req.Data["headers"] = []interface{}{text}
		}
	}
	return nil
}
