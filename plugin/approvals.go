package credentials

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/plugin/store"
)

// Approvals. A credential's approval rules name calls a person must
// approve before an agent makes them. A matching call is held: the engine
// stores an approval request bound to the call's hash (method, path,
// canonical query, body), and the caller is told its ID and where a person
// decides. Once approved, the same call sent again with the ID goes
// through, once, before the approval expires; other arguments, a replay, a
// denial or an expired approval are refused. The agent's own token can
// neither approve (its policy does not grant it, and the engine refuses
// agents) nor describe a call (the edge's requests are signed with the key
// of the sealed injection, which the agent cannot open).

const (
	approvalRulesPrefix = "approval-rules/"
	approvalPrefix      = "approvals/"
	// approvalByCallPrefix finds the newest approval of one agent's call
	// (agent, credential, hash), for calls that cannot carry its ID.
	approvalByCallPrefix = "approvals-by-call/"
	// maxApprovals bounds the approvals an org holds, waiting or decided
	// (decided ones are forgotten approvalsKept after they expire).
	maxApprovals = 1000
	// approvalsKept is how long decided and expired approvals stay readable.
	approvalsKept = 7 * 24 * time.Hour

	defaultApprovalTTL = 15 * time.Minute
)

// Approval states; expired is computed, never stored.
const (
	approvalPending  = "pending"
	approvalApproved = "approved"
	approvalDenied   = "denied"
	approvalUsed     = "used"
	approvalExpired  = "expired"
)

type approvalRules struct {
	Rules []string `json:"rules"`
	// Agents, when set, are the only agents the rules hold for.
	Agents []string      `json:"agents,omitempty"`
	TTL    time.Duration `json:"ttl"`
}

// forAgent are the rules that hold for agent.
func (r *approvalRules) forAgent(agent string) []string {
	if r == nil || (len(r.Agents) > 0 && !slices.Contains(r.Agents, agent)) {
		return nil
	}
	return r.Rules
}

type approval struct {
	ID         string    `json:"id"`
	Agent      string    `json:"agent"`
	Credential string    `json:"credential"`
	Ingress    string    `json:"ingress"`
	Method     string    `json:"method"`
	Path       string    `json:"path"`
	Query      string    `json:"query,omitempty"`
	Preview    string    `json:"preview,omitempty"`
	BodyBytes  int       `json:"body_bytes"`
	Hash       string    `json:"hash"`
	State      string    `json:"state"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	DecidedBy  string    `json:"decided_by,omitempty"`
	DecidedAt  time.Time `json:"decided_at,omitzero"`
	Reason     string    `json:"reason,omitempty"`
	UsedAt     time.Time `json:"used_at,omitzero"`
}

func (a *approval) state(now time.Time) string {
	if (a.State == approvalPending || a.State == approvalApproved) && !now.Before(a.ExpiresAt) {
		return approvalExpired
	}
	return a.State
}

func (a *approval) call() string {
	if a.Method == contract.MethodTool {
		return "tool " + a.Path
	}
	c := a.Method + " " + a.Path
	if a.Query != "" {
		c += "?" + a.Query
	}
	return c
}

func (a *approval) response(now time.Time) map[string]interface{} {
	d := map[string]interface{}{
		"approval_id": a.ID, "agent": a.Agent, "credential": a.Credential, "ingress": a.Ingress,
		"method": a.Method, "path": a.Path, "query": a.Query, "call": a.call(), "preview": a.Preview, "body_bytes": a.BodyBytes,
		"hash": a.Hash, "state": a.state(now), "created_at": a.CreatedAt.Format(time.RFC3339), "expires_at": a.ExpiresAt.Format(time.RFC3339),
	}
	if a.DecidedBy != "" {
		d["decided_by"], d["decided_at"], d["reason"] = a.DecidedBy, a.DecidedAt.Format(time.RFC3339), a.Reason
	}
	if !a.UsedAt.IsZero() {
		d["used_at"] = a.UsedAt.Format(time.RFC3339)
	}
	return d
}

func getApprovalRules(ctx context.Context, s logical.Storage, cred string) (*approvalRules, error) {
	return store.ReadJSON[approvalRules](ctx, s, approvalRulesPrefix+cred, "approval rules")
}

func getApproval(ctx context.Context, s logical.Storage, id string) (*approval, error) {
	return store.ReadJSON[approval](ctx, s, approvalPrefix+id, "approval")
}

func putApproval(ctx context.Context, s logical.Storage, a *approval) error {
	entry, err := logical.StorageEntryJSON(approvalPrefix+a.ID, a)
	if err != nil {
		return err
	}
	return s.Put(ctx, entry)
}

// heldCall is a call that needs approval, as the engine or the edge saw it.
type heldCall struct {
	agent, cred, ingress   string
	method, path, rawQuery string
	hash, preview          string
	bodyBytes              int
}

// requestApproval stores a pending approval for call and tells the org's
// webhooks.
func (b *backend) requestApproval(ctx context.Context, req *logical.Request, call heldCall, ttl time.Duration) (*approval, error) {
	ids, err := req.Storage.List(ctx, approvalPrefix)
	if err != nil {
		return nil, err
	}
	if len(ids) >= maxApprovals {
		return nil, &userError{Status: http.StatusTooManyRequests, Msg: fmt.Sprintf(
			"this org holds %d approvals, the most it keeps (decided ones are forgotten 7 days after they expire): a person decides the waiting ones first", maxApprovals)}
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	now := b.now().UTC()
	a := &approval{ID: hex.EncodeToString(id[:]), Agent: call.agent, Credential: call.cred, Ingress: call.ingress,
		Method: call.method, Path: call.path, Query: call.rawQuery, Preview: call.preview, BodyBytes: call.bodyBytes,
		Hash: call.hash, State: approvalPending, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := putApproval(ctx, req.Storage, a); err != nil {
		return nil, err
	}
	if err := req.Storage.Put(ctx, &logical.StorageEntry{Key: approvalCallKey(a.Agent, a.Credential, a.Hash), Value: []byte(a.ID)}); err != nil {
		return nil, err
	}
	b.logger.Info("approval requested", "approval", a.ID, "agent", a.Agent, "name", a.Credential, "method", a.Method)
	ev := b.newEvent(req.MountPoint, eventApprovalRequested, eventData{Credential: a.Credential, Agent: a.Agent, Approval: a.ID, Call: a.Method + " " + a.Path})
	b.queueEvent(ctx, req.Storage, ev)
	return a, nil
}

// useApproval spends approval id on a call with hash by agent: once, if a
// person approved it, before it expires, for the same arguments.
func (b *backend) useApproval(ctx context.Context, s logical.Storage, id, agent, cred, hash string) error {
	if !approvalIDPattern(id) {
		return userErrorf("%q is not an approval ID", truncate(id, 40))
	}
	lock := b.credLock(approvalPrefix + id)
	lock.Lock()
	defer lock.Unlock()
	a, err := getApproval(ctx, s, id)
	if err != nil {
		return err
	}
	refuse := func(msg string) error { return &userError{Status: http.StatusForbidden, Permanent: true, Msg: msg} }
	if a == nil || a.Agent != agent || a.Credential != cred {
		return refuse("approval " + id + " is not one of this agent's for credential " + cred)
	}
	now := b.now().UTC()
	switch a.state(now) {
	case approvalPending:
		return &userError{Status: http.StatusConflict, Msg: "approval " + id + " is not decided yet: a person approves or denies it in the portal (Approvals)"}
	case approvalDenied:
		msg := "approval " + id + " was denied by " + a.DecidedBy
		if a.Reason != "" {
			msg += ": " + a.Reason
		}
		return refuse(msg)
	case approvalUsed:
		return refuse("approval " + id + " was used already, at " + a.UsedAt.Format(time.RFC3339) + ": each approval lets one call through")
	case approvalExpired:
		return refuse("approval " + id + " expired at " + a.ExpiresAt.Format(time.RFC3339))
	}
	if !hmac.Equal([]byte(a.Hash), []byte(hash)) {
		return refuse("this call is not the one approved (" + a.call() + " with its body): an approval holds for the same method, path, query and body only")
	}
	a.State, a.UsedAt = approvalUsed, now
	if err := putApproval(ctx, s, a); err != nil {
		return err
	}
	b.logger.Info("approval used", "approval", id, "agent", agent, "name", cred, "approved_by", a.DecidedBy)
	return nil
}

func approvalIDPattern(id string) bool {
	if len(id) != 24 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// approvalURL is where a person decides approval id: the portal's, when
// the org's redirect_url names it.
func approvalURL(cfg *mountConfig, mountPoint, id string) string {
	u, err := url.Parse(cfg.RedirectURL)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host + "/orgs/" + orgOfMount(mountPoint) + "/approvals/" + id
}

// approvalCallKey is where the newest approval of agent's call with hash
// on cred is found.
func approvalCallKey(agent, cred, hash string) string {
	sum := sha256.Sum256([]byte(agent + "\x00" + cred + "\x00" + hash))
	return approvalByCallPrefix + hex.EncodeToString(sum[:16])
}

// approvalOfCall is the newest approval of agent's call with hash on
// cred, or nil.
func approvalOfCall(ctx context.Context, s logical.Storage, agent, cred, hash string) (*approval, error) {
	e, err := s.Get(ctx, approvalCallKey(agent, cred, hash))
	if err != nil || e == nil {
		return nil, err
	}
	a, err := getApproval(ctx, s, string(e.Value))
	if err != nil || a == nil || a.Agent != agent || a.Credential != cred || !hmac.Equal([]byte(a.Hash), []byte(hash)) {
		return nil, err
	}
	return a, nil
}

// purgeDue says an hour has passed since old approvals were last
// forgotten, and takes the turn.
func (b *backend) purgeDue() bool {
	now := b.now().Unix()
	last := b.approvalsPurged.Load()
	if last == 0 {
		b.approvalsPurged.CompareAndSwap(0, now)
		return false
	}
	return now-last >= 3600 && b.approvalsPurged.CompareAndSwap(last, now)
}

// purgeApprovals forgets approvals decided, used or expired more than
// approvalsKept ago: the periodic function's part.
func (b *backend) purgeApprovals(ctx context.Context, s logical.Storage) error {
	ids, err := s.List(ctx, approvalPrefix)
	if err != nil {
		return err
	}
	now := b.now()
	for _, id := range ids {
		a, err := getApproval(ctx, s, id)
		if err != nil {
			return err
		}
		if a != nil && a.state(now) != approvalPending && now.Sub(a.ExpiresAt) > approvalsKept {
			if e, err := s.Get(ctx, approvalCallKey(a.Agent, a.Credential, a.Hash)); err != nil {
				return err
			} else if e != nil && string(e.Value) == id {
				if err := s.Delete(ctx, e.Key); err != nil {
					return err
				}
			}
			if err := s.Delete(ctx, approvalPrefix+id); err != nil {
				return err
			}
		}
	}
	return nil
}

// holdVaultCall is the Vault path's part: a call the rules hold is let
// through (nil, nil) only with a usable approval_id for the same call;
// without one it is held, and the caller told the approval's ID.
func (b *backend) holdVaultCall(ctx context.Context, req *logical.Request, d *framework.FieldData, cfg *mountConfig, rules *approvalRules,
	requester, cred, method, target string, body []byte) (*logical.Response, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, userErrorMsg("path cannot be read")
	}
	if !contract.AnyApprovalRuleHolds(rules.forAgent(requester), method, u.Path) {
		return nil, nil
	}
	hash := contract.ApprovalHash(method, u.Path, u.RawQuery, body)
	if id := d.Get("approval_id").(string); id != "" {
		return nil, b.useApproval(ctx, req.Storage, id, requester, cred, hash)
	}
	a, err := b.requestApproval(ctx, req, heldCall{agent: requester, cred: cred, ingress: "vault", method: method, path: u.Path,
		rawQuery: u.RawQuery, hash: hash, preview: contract.ApprovalPreview(body), bodyBytes: len(body)}, rules.TTL)
	if err != nil {
		return nil, err
	}
	where := "in the portal (Approvals)"
	if link := approvalURL(cfg, req.MountPoint, a.ID); link != "" {
		where = "at " + link
	}
	return nil, &userError{Status: http.StatusForbidden, Permanent: true, Msg: fmt.Sprintf(
		"approval required: %s of credential %s needs a person's approval (approval_id=%s, until %s). A person decides %s; then send the same call again with approval_id=%s",
		a.call(), cred, a.ID, a.ExpiresAt.Format(time.RFC3339), where, a.ID)}
}
