package portal

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
)

// Approvals at the edge. The engine sends the credential's approval rules
// for this agent with the sealed injection; a call they name is held
// before anything reaches the service. Its body is read whole (at most
// contract.MaxApprovalBody) to bind the approval to it. Without an
// approval the edge asks the engine for one, signed with the agent's
// report key, and answers 202 with its ID and page; with one
// (X-Credentials-Approval) the engine spends it on this call's hash, and
// the call goes on. An agent that sends Prefer: wait=<seconds> is answered
// only once a person decides, or the wait (at most maxApprovalWait) ends.

const (
	maxApprovalWait  = 120 * time.Second
	approvalPollStep = 500 * time.Millisecond
)

// approvalGate decides a call the rules may hold: it answers the body to
// send on (the one read, or r's own), or writes the answer and returns
// the status sent.
func (h *brokerHandler) approvalGate(w http.ResponseWriter, r *http.Request, call *edgeCall, grant *egress.Grant) (io.Reader, int) {
	id := r.Header.Get(contract.ApprovalHeader)
	r.Header.Del(contract.ApprovalHeader)
	if !contract.AnyApprovalRuleHolds(grant.ApprovalRules, r.Method, call.decoded) {
		return r.Body, 0
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, contract.MaxApprovalBody+1))
	if err != nil {
		return nil, brokerFail(w, &egress.Error{Status: http.StatusBadRequest, Msg: "the request body could not be read"})
	}
	if len(body) > contract.MaxApprovalBody {
		return nil, brokerFail(w, &egress.Error{Status: http.StatusRequestEntityTooLarge, Permanent: true,
			Msg: "a call that needs a person's approval carries at most 1 MiB: the approval is bound to its body"})
	}
	hash := contract.ApprovalHash(r.Method, call.decoded, r.URL.RawQuery, body)
	ctx := r.Context()
	if id == "" {
		held, fail := h.requestApproval(ctx, call, grant, r.Method, r.URL.RawQuery, hash, body)
		if fail != nil {
			return nil, brokerFail(w, fail)
		}
		wait := preferredWait(r.Header)
		if wait == 0 {
			return nil, approvalRequired(w, held)
		}
		if fail := h.awaitDecision(ctx, call, held.ID, wait); fail != nil {
			if fail.Status == http.StatusConflict {
				return nil, approvalRequired(w, held)
			}
			return nil, brokerFail(w, fail)
		}
		id = held.ID
	}
	if fail := h.useApproval(ctx, call, id, hash); fail != nil {
		return nil, brokerFail(w, fail)
	}
	return bytes.NewReader(body), 0
}

// heldApproval is the engine's answer to a held call.
type heldApproval struct {
	ID        string `json:"approval_id"`
	ExpiresAt string `json:"expires_at"`
	URL       string `json:"approval_url"`
}

func (h *brokerHandler) requestApproval(ctx context.Context, call *edgeCall, grant *egress.Grant, method, rawQuery, hash string, body []byte) (*heldApproval, *egress.Error) {
	if len(grant.ReportKey) == 0 {
		return nil, &egress.Error{Status: http.StatusForbidden, Permanent: true, Msg: "this call needs a person's approval, which only an agent's call can wait for"}
	}
	preview := contract.ApprovalPreview(body)
	size := strconv.Itoa(len(body))
	mac := contract.ReportMAC(grant.ReportKey, contract.ReportApproval, call.cred, method, call.decoded, rawQuery, hash, preview, size)
	var out struct {
		Data heldApproval `json:"data"`
	}
	u := &url.URL{Path: "/v1/" + contract.Mount(call.org) + "/approvals/request"}
	fail := h.vaultDo(ctx, call.token, http.MethodPost, u, map[string]any{
		"credential": call.cred, "method": method, "path": call.decoded, "query": rawQuery, "hash": hash,
		"preview": preview, "body_bytes": len(body), "mac": hex.EncodeToString(mac),
	}, &out, engineRefusal)
	if fail != nil {
		return nil, fail
	}
	if out.Data.URL == "" && h.publicURL != nil {
		out.Data.URL = h.publicURL() + "/orgs/" + call.org + "/approvals/" + out.Data.ID
	}
	return &out.Data, nil
}

func (h *brokerHandler) useApproval(ctx context.Context, call *edgeCall, id, hash string) *egress.Error {
	if len(id) != 24 || strings.Trim(id, "0123456789abcdef") != "" {
		return &egress.Error{Status: http.StatusBadRequest, Permanent: true, Msg: contract.ApprovalHeader + " must be the approval's ID, as the held call was answered"}
	}
	u := &url.URL{Path: "/v1/" + contract.Mount(call.org) + "/approvals/" + id + "/use"}
	var out struct{}
	return h.vaultDo(ctx, call.token, http.MethodPost, u, map[string]any{"credential": call.cred, "hash": hash}, &out, engineRefusal)
}

// awaitDecision polls the approval until a person decides it or wait
// ends (a 409 then, as the engine says of a pending approval).
func (h *brokerHandler) awaitDecision(ctx context.Context, call *edgeCall, id string, wait time.Duration) *egress.Error {
	deadline := time.Now().Add(wait)
	u := &url.URL{Path: "/v1/" + contract.Mount(call.org) + "/approvals/" + id}
	for {
		var out struct {
			Data struct {
				State string `json:"state"`
			} `json:"data"`
		}
		if fail := h.vaultDo(ctx, call.token, http.MethodGet, u, nil, &out, engineRefusal); fail != nil {
			return fail
		}
		if out.Data.State != "pending" {
			return nil // approved, or the use says why not
		}
		if time.Now().Add(approvalPollStep).After(deadline) || !sleepCtx(ctx, approvalPollStep) {
			return &egress.Error{Status: http.StatusConflict, Msg: "not decided yet"}
		}
	}
}

// engineRefusal passes the engine's refusal on as it said it.
func engineRefusal(status int, errs []string) *egress.Error {
	msg := strings.Join(errs, "; ")
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &egress.Error{Status: status, Permanent: status != http.StatusConflict && status < 500, Msg: msg}
}

// preferredWait reads Prefer: wait=<seconds> (RFC 7240), bounded.
func preferredWait(h http.Header) time.Duration {
	for _, v := range h.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			if n, ok := strings.CutPrefix(strings.TrimSpace(p), "wait="); ok {
				if s, err := strconv.Atoi(n); err == nil && s > 0 {
					return min(time.Duration(s)*time.Second, maxApprovalWait)
				}
			}
		}
	}
	return 0
}

// approvalRequired answers a held call: 202, where a person decides, and
// how to send the call again.
func approvalRequired(w http.ResponseWriter, a *heldApproval) int {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Broker-Error", "true")
	h.Set("Retry-After", "5")
	if a.URL != "" {
		h.Set("Link", "<"+a.URL+`>; rel="approval"`)
	}
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type": "error",
		"error": map[string]any{"type": "approval_required", "message": "this call needs a person's approval: a person decides at " + a.URL +
			"; then send the same call again (same method, path, query and body) with the header " + contract.ApprovalHeader + ": " + a.ID},
		"approval_id": a.ID, "approval_url": a.URL, "expires_at": a.ExpiresAt,
	})
	return http.StatusAccepted
}

// approveTool is Vault's decision of a remote MCP tool call and its
// approval: the call is bound to the tool and its arguments (in canonical
// JSON). It answers the grant Vault decided, for the call's own request to
// the remote server (the caller zeroes it), or the tool error to answer.
// A grant of nil and no error: Vault refused, and the call's request meets
// the refusal with its reason.
func (h *brokerHandler) approveTool(ctx context.Context, org, cred, token, tool string, args json.RawMessage) (*egress.Grant, string) {
	call := &edgeCall{org: org, cred: cred, token: token, tokenHeader: "Authorization", decoded: "/" + tool}
	grant, fail := h.authorize(ctx, call, contract.MethodTool)
	if fail != nil {
		return nil, ""
	}
	if !contract.AnyApprovalRuleHolds(grant.ApprovalRules, contract.MethodTool, tool) {
		return grant, ""
	}
	canonical := []byte("null")
	if len(args) > 0 {
		var v any
		if err := json.Unmarshal(args, &v); err != nil {
			grant.Material.Zero()
			return nil, "the tool's arguments are not JSON"
		}
		canonical, _ = json.Marshal(v)
	}
	call.decoded = tool
	if held := h.matchApproval(ctx, call, grant, contract.MethodTool, "", canonical); held != nil {
		grant.Material.Zero()
		return nil, held.Msg
	}
	return grant, ""
}

// matchApproval is the approval of a call that cannot carry an approval's
// ID (an MCP tool's): calling again with the same arguments once a person
// approved spends the approval. It answers nil to go on, or why not.
func (h *brokerHandler) matchApproval(ctx context.Context, call *edgeCall, grant *egress.Grant, method, rawQuery string, body []byte) *egress.Error {
	hash := contract.ApprovalHash(method, call.decoded, rawQuery, body)
	var out struct {
		Data struct {
			State string `json:"state"`
			ID    string `json:"approval_id"`
			URL   string `json:"approval_url"`
		} `json:"data"`
	}
	u := &url.URL{Path: "/v1/" + contract.Mount(call.org) + "/approvals/match"}
	if fail := h.vaultDo(ctx, call.token, http.MethodPost, u, map[string]any{"credential": call.cred, "hash": hash}, &out, engineRefusal); fail != nil {
		return &egress.Error{Status: fail.Status, Msg: "the call's approval could not be checked: " + fail.Msg}
	}
	link := out.Data.URL
	switch out.Data.State {
	case "used":
		return nil
	case "none":
		held, fail := h.requestApproval(ctx, call, grant, method, rawQuery, hash, body)
		if fail != nil {
			return &egress.Error{Status: fail.Status, Msg: "the call needs a person's approval, which could not be asked for: " + fail.Msg}
		}
		out.Data.ID, link = held.ID, held.URL
	}
	if link == "" && h.publicURL != nil {
		link = h.publicURL() + "/orgs/" + call.org + "/approvals/" + out.Data.ID
	}
	what := method + " " + call.decoded
	if method == contract.MethodTool {
		what = call.decoded
	}
	return &egress.Error{Status: http.StatusAccepted, Permanent: true, Msg: "This call of " + what + " needs a person's approval (approval " + out.Data.ID +
		"): a person decides at " + link + ". Once approved, make the same call again with the same arguments; it then goes through once."}
}
