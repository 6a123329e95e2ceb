package credentials

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/plugin/store"
)

// Each agent's trail: its recent calls (time, ingress, credential, method
// and path or tool, status, bytes, duration), kept bounded in the engine's
// storage, with nothing secret: the query, headers and bodies are never
// kept. The engine records the calls it makes itself (the Vault path,
// mail); the portal's edge, which streams its calls without the engine,
// reports its lines with the agent's own token, each batch signed with a
// key the engine gave the edge inside the sealed injection (which the
// agent cannot open), so an agent cannot write lines into its trail.

const (
	trailPrefix = "trail/"
	trailKeyKey = "trail-key"
	// maxTrailLines is how many calls an agent's trail keeps, newest last.
	maxTrailLines = 1000
	// maxTrailReport bounds the lines of one report from the edge.
	maxTrailReport = 500
)

// Ingresses a trail line can name.
var trailIngresses = []string{"vault", "edge", "proxy", "mcp", "mail"}

type trailLine = contract.TrailLine

// trailTracker holds lines not yet flushed, by agent: recording a call
// costs no storage write; the periodic function flushes.
type trailTracker struct {
	// mu guards pending.
	mu      sync.Mutex
	pending map[string][]trailLine
}

func (t *trailTracker) record(agent string, lines ...trailLine) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == nil {
		t.pending = map[string][]trailLine{}
	}
	p := append(t.pending[agent], lines...)
	if len(p) > maxTrailLines {
		p = p[len(p)-maxTrailLines:]
	}
	t.pending[agent] = p
}

func (t *trailTracker) pendingOf(agent string) []trailLine {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.pending[agent])
}

// flush adds the pending lines to each agent's stored trail, keeping the
// newest maxTrailLines. Lines whose write failed are kept for the next.
func (t *trailTracker) flush(ctx context.Context, s logical.Storage) error {
	t.mu.Lock()
	pending := t.pending
	t.pending = nil
	t.mu.Unlock()
	var firstErr error
	for agent, lines := range pending {
		if err := appendTrail(ctx, s, agent, lines); err != nil {
			t.record(agent, lines...)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

// An agent's trail is stored in chunks of trailChunk lines
// (trail/<agent>/<seq>), so a flush rewrites the newest chunk only, not
// the whole trail; the oldest chunks past maxTrailLines are deleted.
const trailChunk = 100

func trailChunkKey(agent string, seq int) string {
	return fmt.Sprintf("%s%s/%010d", trailPrefix, agent, seq)
}

// trailChunks lists agent's chunk numbers, oldest first.
func trailChunks(ctx context.Context, s logical.Storage, agent string) ([]int, error) {
	keys, err := s.List(ctx, trailPrefix+agent+"/")
	if err != nil {
		return nil, err
	}
	var seqs []int
	for _, k := range keys {
		if n, err := strconv.Atoi(k); err == nil {
			seqs = append(seqs, n)
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}

func appendTrail(ctx context.Context, s logical.Storage, agent string, lines []trailLine) error {
	seqs, err := trailChunks(ctx, s, agent)
	if err != nil {
		return err
	}
	seq, chunk := 0, []trailLine{}
	if len(seqs) > 0 {
		seq = seqs[len(seqs)-1]
		got, err := store.ReadJSON[[]trailLine](ctx, s, trailChunkKey(agent, seq), "agent trail")
		if err != nil {
			return err
		}
		if got != nil {
			chunk = *got
		}
	}
	for len(lines) > 0 {
		if len(chunk) == trailChunk {
			seq, chunk = seq+1, []trailLine{}
			seqs = append(seqs, seq)
		}
		n := min(trailChunk-len(chunk), len(lines))
		chunk, lines = append(chunk, lines[:n]...), lines[n:]
		entry, err := logical.StorageEntryJSON(trailChunkKey(agent, seq), chunk)
		if err != nil {
			return err
		}
		if err := s.Put(ctx, entry); err != nil {
			return err
		}
	}
	if len(seqs) == 0 {
		return nil
	}
	// Keep the chunks that hold the newest maxTrailLines.
	keep := maxTrailLines/trailChunk + 1
	for _, old := range seqs[:max(len(seqs)-keep, 0)] {
		if err := s.Delete(ctx, trailChunkKey(agent, old)); err != nil {
			return err
		}
	}
	return nil
}

// readTrail is agent's stored trail, oldest first, at most maxTrailLines.
func readTrail(ctx context.Context, s logical.Storage, agent string) ([]trailLine, error) {
	seqs, err := trailChunks(ctx, s, agent)
	if err != nil {
		return nil, err
	}
	var all []trailLine
	for _, seq := range seqs {
		got, err := store.ReadJSON[[]trailLine](ctx, s, trailChunkKey(agent, seq), "agent trail")
		if err != nil {
			return nil, err
		}
		if got != nil {
			all = append(all, *got...)
		}
	}
	if len(all) > maxTrailLines {
		all = all[len(all)-maxTrailLines:]
	}
	return all, nil
}

// recordCall puts one call of req's agent in its trail.
func (b *backend) recordCall(req *logical.Request, l trailLine) {
	if agent := b.agentOf(req); agent != "" {
		b.trail.record(agent, l)
	}
}

// trailKeyFor is the key the edge signs entity's reports with: derived
// from the mount's trail secret, so nothing per agent is stored.
func (b *backend) trailKeyFor(ctx context.Context, s logical.Storage, entityID string) ([]byte, error) {
	secret, err := b.trailSecret(ctx, s)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("credentials trail key v1\x00" + entityID))
	return m.Sum(nil), nil
}

// trailSecret is the mount's secret for trail keys, made on first use.
func (b *backend) trailSecret(ctx context.Context, s logical.Storage) ([]byte, error) {
	if v, ok := b.trailSecretCache.Load().([]byte); ok {
		return v, nil
	}
	b.trailSecretMu.Lock()
	defer b.trailSecretMu.Unlock()
	entry, err := s.Get(ctx, trailKeyKey)
	if err != nil {
		return nil, err
	}
	if entry == nil {
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
		entry = &logical.StorageEntry{Key: trailKeyKey, Value: secret, SealWrap: true}
		if err := s.Put(ctx, entry); err != nil {
			return nil, err
		}
	}
	b.trailSecretCache.Store(entry.Value)
	return entry.Value, nil
}

// edgeReporter is the agent whose token sends an edge's report, and the
// report key it is signed with; saying is who may send it, for the
// refusal of any other caller.
func (b *backend) edgeReporter(ctx context.Context, req *logical.Request, saying string) (string, []byte, error) {
	agent := b.agentOf(req)
	if agent == "" {
		return "", nil, userErrorMsg(saying)
	}
	key, err := b.trailKeyFor(ctx, req.Storage, req.EntityID)
	return agent, key, err
}

// checkReportMAC refuses a report whose mac (hex) is not the edge's
// signature of kind and parts under key, with msg.
func checkReportMAC(key []byte, mac, msg, kind string, parts ...string) error {
	got, err := hex.DecodeString(mac)
	if err != nil || !hmac.Equal(got, contract.ReportMAC(key, kind, parts...)) {
		return &userError{Status: http.StatusForbidden, Permanent: true, Msg: msg}
	}
	return nil
}

// parseTrailReport checks an edge's report: its signature under the
// caller's trail key, then each line.
func parseTrailReport(raw, mac string, key []byte, now time.Time) ([]trailLine, error) {
	if err := checkReportMAC(key, mac, "the report's mac does not match: trail lines are reported by the portal's edge", contract.ReportTrail, raw); err != nil {
		return nil, err
	}
	var lines []trailLine
	if err := json.Unmarshal([]byte(raw), &lines); err != nil {
		return nil, userErrorMsg("lines must be a JSON list of trail lines")
	}
	if len(lines) == 0 || len(lines) > maxTrailReport {
		return nil, userErrorf("a report holds 1 to %d lines, not %d", maxTrailReport, len(lines))
	}
	for i, l := range lines {
		var bad string
		switch {
		case !slices.Contains(trailIngresses, l.Ingress):
			bad = "ingress must be one of " + strings.Join(trailIngresses, ", ")
		case validateCredName(l.Credential) != nil:
			bad = "credential is not a credential name"
		case l.Method != "" && !contract.ValidMethod(l.Method):
			bad = contract.MethodRule()
		case len(l.Path) > contract.MaxTrailPath || (l.Path != "" && !strings.HasPrefix(l.Path, "/")) || strings.ContainsAny(l.Path, "?#"):
			bad = "path must start with / and have no query, at most 1024 bytes"
		case l.Tool != "" && !contract.ValidToolName(l.Tool):
			bad = "tool is not a tool name"
		case l.Status < 0 || l.Status > 999 || l.Bytes < 0 || l.DurationMS < 0:
			bad = "status, bytes and duration_ms are not negative"
		case l.At.Before(now.Add(-time.Hour)) || l.At.After(now.Add(time.Minute)):
			bad = "at must be within the last hour"
		}
		if bad != "" {
			return nil, userErrorf("lines[%d]: %s", i, bad)
		}
		lines[i].At = l.At.UTC()
	}
	return lines, nil
}

// trailRead is an agent's trail, newest first, stored and pending.
func (b *backend) trailRead(ctx context.Context, s logical.Storage, agent string, limit int) ([]trailLine, error) {
	stored, err := readTrail(ctx, s, agent)
	if err != nil {
		return nil, err
	}
	all := append(stored, b.trail.pendingOf(agent)...)
	slices.SortStableFunc(all, func(a, b trailLine) int { return b.At.Compare(a.At) })
	if limit > 0 && len(all) > limit {
		all = all[:limit]
	}
	return all, nil
}

func trailLineMap(l trailLine) map[string]interface{} {
	m := map[string]interface{}{
		"at": l.At.Format(time.RFC3339Nano), "ingress": l.Ingress, "credential": l.Credential,
		"status": l.Status, "bytes": l.Bytes, "duration_ms": l.DurationMS,
	}
	if l.Method != "" {
		m["method"], m["path"] = l.Method, l.Path
	}
	if l.Tool != "" {
		m["tool"] = l.Tool
	}
	return m
}

func msSince(t time.Time) float64 {
	return float64(time.Since(t).Microseconds()) / 1000
}
