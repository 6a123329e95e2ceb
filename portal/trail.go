package portal

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/internal/egress"
)

// The edge's part of each agent's trail. The edge streams an agent's
// calls without the engine, so it tells the engine of them: batched per
// token (a report at most every trailReportEvery, or at trailReportMax
// lines), sent off the call's path with the agent's own token, and signed
// with the trail key the engine put in the agent's sealed injection. A
// line holds no query, header or body. Reports that cannot be sent are
// dropped with a warning: the trail is a record for people, not the
// authorization, which Vault gave each call already.

const (
	trailReportEvery = time.Second
	trailReportMax   = 200
	// maxTrailBatches bounds the tokens with lines waiting; past it new
	// lines are dropped until reports go out.
	maxTrailBatches = 4096
)

type trailLine = contract.TrailLine

type trailReporter struct {
	h *brokerHandler

	mu      sync.Mutex
	batches map[string]*trailBatch
	// wg counts reports in flight, for tests and shutdown.
	wg sync.WaitGroup
}

type trailBatch struct {
	org, token string
	key        []byte
	lines      []trailLine
}

// note records one call of an agent's token; calls of tokens that are not
// an agent's (no trail key) are not kept.
func (t *trailReporter) note(call *edgeCall, grant *egress.Grant, l trailLine) {
	if t == nil || len(grant.ReportKey) == 0 {
		return
	}
	l.Credential = call.cred
	l.Path = contract.TrailPath(l.Path)
	id := call.org + "\x00" + call.token
	t.mu.Lock()
	b := t.batches[id]
	if b == nil {
		if len(t.batches) >= maxTrailBatches {
			t.mu.Unlock()
			t.h.logger.Warn("broker: too many trail reports waiting; a call's trail line is dropped")
			return
		}
		b = &trailBatch{org: call.org, token: call.token, key: slices.Clone(grant.ReportKey)}
		t.batches[id] = b
		time.AfterFunc(trailReportEvery, func() { t.send(id) })
	}
	b.lines = append(b.lines, l)
	full := len(b.lines) >= trailReportMax
	t.mu.Unlock()
	if full {
		go t.send(id)
	}
}

// send reports the batch of id, if it is still waiting.
func (t *trailReporter) send(id string) {
	t.mu.Lock()
	b := t.batches[id]
	delete(t.batches, id)
	if b != nil {
		t.wg.Add(1)
	}
	t.mu.Unlock()
	if b == nil {
		return
	}
	defer t.wg.Done()
	raw, err := json.Marshal(b.lines)
	if err != nil {
		return
	}
	mac := contract.ReportMAC(b.key, contract.ReportTrail, string(raw))
	u := &url.URL{Path: "/v1/" + contract.Mount(b.org) + "/trail-report"}
	ctx, cancel := context.WithTimeout(context.Background(), edgeVaultTimeout)
	defer cancel()
	var out struct{}
	if fail := t.h.vaultDo(ctx, b.token, http.MethodPost, u, map[string]string{"lines": string(raw), "mac": hex.EncodeToString(mac)}, &out,
		func(status int, errs []string) *egress.Error {
			return &egress.Error{Status: status, Msg: strings.Join(errs, "; ")}
		}); fail != nil {
		t.h.logger.Warn("broker: reporting an agent's calls for its trail failed", "org", b.org, "lines", len(b.lines), "status", fail.Status, "error", fail.Msg)
	}
}

// flush sends every waiting batch now and waits for the reports.
func (t *trailReporter) flush() {
	t.mu.Lock()
	ids := make([]string, 0, len(t.batches))
	for id := range t.batches {
		ids = append(ids, id)
	}
	t.mu.Unlock()
	for _, id := range ids {
		t.send(id)
	}
	t.wg.Wait()
}

// countingWriter counts the bytes of an answer sent to the agent, for its
// trail; Unwrap keeps http.ResponseController's flush and hijack.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// agentTrailPage shows an agent's recent calls, newest first.
type agentTrailPage struct {
	layout
	Agent string
	Calls []trailLine
}

func (s *Server) readTrail(r *http.Request, p *person) (string, []trailLine, error) {
	org, _ := orgOf(r)
	agent := mux.Vars(r)["name"]
	d, err := p.v.read(r.Context(), contract.Mount(org)+"/agents/"+agent+"/trail")
	if err != nil || d == nil {
		return agent, nil, err
	}
	raw, err := json.Marshal(d["calls"])
	if err != nil {
		return agent, nil, err
	}
	var calls []trailLine
	err = json.Unmarshal(raw, &calls)
	return agent, calls, err
}

func (s *Server) handleAgentTrail(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	agent, calls, err := s.readTrail(r, p)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	l, err := s.frameFor(r.Context(), p, org, "Trail of agent "+agent, "agents")
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	s.render(w, r, http.StatusOK, "trail.html", &agentTrailPage{layout: l, Agent: agent, Calls: calls})
}

// handleAgentTrailExport sends the trail as JSON lines, oldest first, for
// a log pipeline or a person's jq.
func (s *Server) handleAgentTrailExport(w http.ResponseWriter, r *http.Request, p *person) {
	org, _ := orgOf(r)
	agent, calls, err := s.readTrail(r, p)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	w.Header().Set("Content-Type", "application/jsonl; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+org+"-"+agent+`-trail.jsonl"`)
	enc := json.NewEncoder(w)
	for _, c := range slices.Backward(calls) {
		_ = enc.Encode(c)
	}
}
