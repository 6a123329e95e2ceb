package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
)

// Mail at the edge: POST /broker/<org>/<cred>/send with a JSON message
// sends it with an SMTP credential. The engine submits it (mail/<cred>);
// the edge only carries the agent's token and the message, so Vault
// authorizes, audits and records the use as for any call.

const (
	mailSendPath = "/send"
	// maxMailRequest is Vault's own request size limit (max_request_size);
	// the engine's mail_max_bytes bounds the message within it.
	maxMailRequest = 32 << 20
)

// mailPath is the credential's mail path under the org's mount.
func (c *edgeCall) mailPath() string { return contract.UsePath(c.org, contract.UseMail, c.cred) }

// isMailCall says whether the call is a message for an SMTP credential:
// POST /send by a token that may update the credential's mail path (only
// SMTP credentials are granted one). Any other call is brokered as HTTP.
func (h *brokerHandler) isMailCall(ctx context.Context, call *edgeCall, method string) bool {
	if method != http.MethodPost || call.decoded != mailSendPath {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, edgeVaultTimeout)
	defer cancel()
	return h.checkCapability(ctx, call, method, call.mailPath()) == nil
}

// mailReceipt is the engine's answer to a sent message.
type mailReceipt struct {
	MessageID    string `json:"message_id"`
	Recipients   int    `json:"recipients"`
	ServerAnswer string `json:"server_answer"`
}

// sendMail passes the message to the engine and answers with its receipt.
func (h *brokerHandler) sendMail(w http.ResponseWriter, r *http.Request, call *edgeCall) int {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxMailRequest+1))
	if err != nil {
		return brokerFail(w, egress.BadRequest("reading the message failed"))
	}
	if len(raw) > maxMailRequest {
		return brokerFail(w, egress.TooLarge("message", maxMailRequest))
	}
	receipt, fail := h.doMail(r.Context(), call, raw)
	if fail != nil {
		return brokerFail(w, fail)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(receipt)
	return http.StatusOK
}

// doMail sends one message (a JSON object of mail/<cred>'s fields) through
// the engine with the call's token: the edge's mail call, as do is its HTTP
// call, for /send and for MCP's send_email alike. Vault authorizes it on
// the credential's mail path.
func (h *brokerHandler) doMail(ctx context.Context, call *edgeCall, message []byte) (*mailReceipt, *egress.Error) {
	dec := json.NewDecoder(bytes.NewReader(message))
	var fields map[string]json.RawMessage
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return nil, egress.BadRequest(`the message must be a JSON object: {"from": ..., "to": [...], "subject": ..., "text": ...}`)
	}
	ctx, cancel := context.WithTimeout(ctx, edgeVaultTimeout)
	defer cancel()
	var out struct {
		Data mailReceipt `json:"data"`
	}
	path := call.mailPath()
	if fail := h.vaultCall(ctx, call, http.MethodPost, path, &url.URL{Path: "/v1/" + path}, fields, &out); fail != nil {
		return nil, fail
	}
	return &out.Data, nil
}
