package credentials

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/plugin/store"
)

// Limits: rate limits and budgets, one mechanism. A limit caps the calls
// (or the spend, in US dollars, from the usage the edge reads in the
// answers) of one agent, of each agent, of one credential or of them
// together, per second, minute, hour, day, week or month. Every ingress
// takes from the same counters, here in the engine on the active node:
// the Vault path and mail before they call, the edge by leasing a few
// calls at a time (limits/lease), so a call it makes from its lease costs
// no round trip. A lease is counted when it is given, so the portals
// together never exceed a limit; a lease unused within a second is lost,
// which errs on the side of the limit. Counters of an hour or longer are
// stored on every change and survive restarts and leader changes; shorter
// ones live in memory.

const (
	limitPrefix      = "limits/"
	limitUsagePrefix = "limit-usage/"
	// limitWarnAt is the share of a limit at which it warns.
	limitWarnAt = 0.8
	maxLimits   = 256
)

var limitPeriods = []string{"second", "minute", "hour", "day", "week", "month"}

type limitSpec struct {
	Name string `json:"name"`
	// Agent is an agent's name, "*" for each agent on its own, or ""
	// for all callers together.
	Agent string `json:"agent,omitempty"`
	// Credential is one credential, or "" for all of them.
	Credential string  `json:"credential,omitempty"`
	Calls      int64   `json:"calls,omitempty"`
	USD        float64 `json:"usd,omitempty"`
	Period     string  `json:"period"`
}

func (l *limitSpec) appliesTo(agent, cred string) bool {
	if l.Credential != "" && l.Credential != cred {
		return false
	}
	switch l.Agent {
	case "":
		return true
	case "*":
		return agent != ""
	}
	return l.Agent == agent
}

// counterKey names the counter a call of agent takes from.
func (l *limitSpec) counterKey(agent string) string {
	if l.Agent == "*" {
		return l.Name + "/" + agent
	}
	return l.Name
}

// share is how much of l u has used: 1 is all of it.
func (l *limitSpec) share(u *limitUsage) float64 {
	switch {
	case l.Calls > 0:
		return float64(u.Calls) / float64(l.Calls)
	case l.USD > 0:
		return u.USD / l.USD
	}
	return 0
}

// Limit states, by share used.
const (
	limitOK      = "ok"
	limitWarning = "warning"
	limitReached = "reached"
)

func limitState(share float64) string {
	switch {
	case share >= 1:
		return limitReached
	case share >= limitWarnAt:
		return limitWarning
	}
	return limitOK
}

func (l *limitSpec) persistent() bool { return l.Period != "second" && l.Period != "minute" }

func (l *limitSpec) describe() string {
	what := fmt.Sprintf("%d calls", l.Calls)
	if l.USD > 0 {
		what = "$" + strconv.FormatFloat(l.USD, 'f', -1, 64)
	}
	return fmt.Sprintf("limit %s (%s a %s)", l.Name, what, l.Period)
}

// periodStart is the start of the period holding t, in UTC; weeks start
// on Monday.
func periodStart(period string, t time.Time) time.Time {
	t = t.UTC()
	switch period {
	case "second":
		return t.Truncate(time.Second)
	case "minute":
		return t.Truncate(time.Minute)
	case "hour":
		return t.Truncate(time.Hour)
	case "day":
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	case "week":
		d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return d.AddDate(0, 0, -((int(d.Weekday()) + 6) % 7))
	}
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

func periodEnd(period string, start time.Time) time.Time {
	switch period {
	case "second":
		return start.Add(time.Second)
	case "minute":
		return start.Add(time.Minute)
	case "hour":
		return start.Add(time.Hour)
	case "day":
		return start.AddDate(0, 0, 1)
	case "week":
		return start.AddDate(0, 0, 7)
	}
	return start.AddDate(0, 1, 0)
}

type limitUsage struct {
	Start time.Time `json:"start"`
	Calls int64     `json:"calls"`
	USD   float64   `json:"usd"`
}

// limiter holds the mount's limits and their counters.
type limiter struct {
	// mu guards everything below.
	mu     sync.Mutex
	specs  []*limitSpec
	loaded bool
	usage  map[string]*limitUsage
	// stored says a persistent counter was read from storage.
	stored map[string]bool
}

// limitRefusal is a call over a limit: 429 with when to retry.
func limitRefusal(l *limitSpec, retry time.Duration) error {
	secs := int(math.Ceil(retry.Seconds()))
	return &userError{Status: http.StatusTooManyRequests, RetryAfter: secs, Msg: fmt.Sprintf(
		"%s is reached: retry after %ds (at %s)", l.describe(), secs, time.Now().Add(retry).UTC().Format(time.RFC3339))}
}

func (b *backend) limitSpecs(ctx context.Context, s logical.Storage) ([]*limitSpec, error) {
	lm := &b.limits
	lm.mu.Lock()
	defer lm.mu.Unlock()
	if lm.loaded {
		return lm.specs, nil
	}
	names, err := s.List(ctx, limitPrefix)
	if err != nil {
		return nil, err
	}
	specs := []*limitSpec{}
	for _, n := range names {
		l, err := store.ReadJSON[limitSpec](ctx, s, limitPrefix+n, "limit")
		if err != nil {
			return nil, err
		}
		if l != nil {
			specs = append(specs, l)
		}
	}
	sort.Slice(specs, func(i, j int) bool { return specs[i].Name < specs[j].Name })
	lm.specs, lm.loaded = specs, true
	return specs, nil
}

// forgetLimits drops the cached limits: one was written or deleted (here
// or, through invalidation, elsewhere).
func (b *backend) forgetLimits() {
	b.limits.mu.Lock()
	b.limits.loaded = false
	b.limits.mu.Unlock()
}

// forgetLimitUsage drops a counter another node stored, so it is read
// again before it is next taken from.
func (b *backend) forgetLimitUsage(key string) {
	b.limits.mu.Lock()
	delete(b.limits.usage, key)
	delete(b.limits.stored, key)
	b.limits.mu.Unlock()
}

// limited says whether any limit holds for agent's calls of cred.
func (b *backend) limited(ctx context.Context, s logical.Storage, agent, cred string) (bool, error) {
	specs, err := b.limitSpecs(ctx, s)
	if err != nil {
		return false, err
	}
	for _, l := range specs {
		if l.appliesTo(agent, cred) {
			return true, nil
		}
	}
	return false, nil
}

// counter is the usage of key for the period holding now, read from
// storage once for persistent limits. lm.mu is held.
func (b *backend) counter(ctx context.Context, s logical.Storage, l *limitSpec, key string, now time.Time) (*limitUsage, error) {
	lm := &b.limits
	if lm.usage == nil {
		lm.usage, lm.stored = map[string]*limitUsage{}, map[string]bool{}
	}
	start := periodStart(l.Period, now)
	u := lm.usage[key]
	if u == nil && l.persistent() && !lm.stored[key] {
		got, err := store.ReadJSON[limitUsage](ctx, s, limitUsagePrefix+key, "limit usage")
		if err != nil {
			return nil, err
		}
		lm.stored[key] = true
		u = got
	}
	if u == nil || !u.Start.Equal(start) {
		u = &limitUsage{Start: start}
	}
	lm.usage[key] = u
	return u, nil
}

// takeCalls takes up to want calls for agent on cred from every limit that
// holds, and answers how many it may make: at least one, or a refusal
// naming the limit reached. Near a limit it gives fewer at once, so that
// leases lost unused cost little.
func (b *backend) takeCalls(ctx context.Context, s logical.Storage, agent, cred string, want int64) (int64, error) {
	specs, err := b.limitSpecs(ctx, s)
	if err != nil {
		return 0, err
	}
	lm := &b.limits
	lm.mu.Lock()
	defer lm.mu.Unlock()
	now := b.now()
	type taken struct {
		l   *limitSpec
		key string
		u   *limitUsage
	}
	var takes []taken
	grant := want
	for _, l := range specs {
		if !l.appliesTo(agent, cred) {
			continue
		}
		key := l.counterKey(agent)
		u, err := b.counter(ctx, s, l, key, now)
		if err != nil {
			return 0, err
		}
		retry := periodEnd(l.Period, u.Start).Sub(now)
		if l.USD > 0 {
			if u.USD >= l.USD {
				return 0, limitRefusal(l, retry)
			}
			// Spend is known only once an answer is read: one call at a
			// time, so the next asks again.
			grant = 1
		}
		if l.Calls > 0 {
			left := l.Calls - u.Calls
			if left <= 0 {
				return 0, limitRefusal(l, retry)
			}
			grant = min(grant, max(1, left/4))
		}
		takes = append(takes, taken{l, key, u})
	}
	for _, t := range takes {
		if t.l.Calls == 0 {
			continue
		}
		before := t.l.share(t.u)
		t.u.Calls += grant
		b.warnAt80(t.l, before, t.u)
		if t.l.persistent() {
			if err := putLimitUsage(ctx, s, t.key, t.u); err != nil {
				return 0, err
			}
		}
	}
	return grant, nil
}

// addSpend adds usd of agent's calls of cred to the spend limits that
// hold; the next call past one is refused.
func (b *backend) addSpend(ctx context.Context, s logical.Storage, agent, cred string, usd float64) error {
	if usd <= 0 {
		return nil
	}
	specs, err := b.limitSpecs(ctx, s)
	if err != nil {
		return err
	}
	lm := &b.limits
	lm.mu.Lock()
	defer lm.mu.Unlock()
	now := b.now()
	for _, l := range specs {
		if l.USD == 0 || !l.appliesTo(agent, cred) {
			continue
		}
		key := l.counterKey(agent)
		u, err := b.counter(ctx, s, l, key, now)
		if err != nil {
			return err
		}
		before := l.share(u)
		u.USD += usd
		b.warnAt80(l, before, u)
		if l.persistent() {
			if err := putLimitUsage(ctx, s, key, u); err != nil {
				return err
			}
		}
	}
	return nil
}

// warnAt80 logs a limit whose use just passed limitWarnAt.
func (b *backend) warnAt80(l *limitSpec, before float64, u *limitUsage) {
	if before < limitWarnAt && l.share(u) >= limitWarnAt {
		b.logger.Warn("a limit is at 80%", "limit", l.Name, "calls", u.Calls, "usd", u.USD, "of", l.describe())
	}
}

func putLimitUsage(ctx context.Context, s logical.Storage, key string, u *limitUsage) error {
	entry, err := logical.StorageEntryJSON(limitUsagePrefix+key, u)
	if err != nil {
		return err
	}
	return s.Put(ctx, entry)
}

// limitStatus is one limit's counters now, for reads and the portal.
func (b *backend) limitStatus(ctx context.Context, s logical.Storage, l *limitSpec) ([]map[string]interface{}, error) {
	lm := &b.limits
	lm.mu.Lock()
	defer lm.mu.Unlock()
	now := b.now()
	var keys []string
	if l.Agent == "*" {
		for k := range lm.usage {
			if strings.HasPrefix(k, l.Name+"/") {
				keys = append(keys, k)
			}
		}
		if l.persistent() {
			stored, err := s.List(ctx, limitUsagePrefix+l.Name+"/")
			if err != nil {
				return nil, err
			}
			for _, k := range stored {
				keys = append(keys, l.Name+"/"+k)
			}
		}
		keys = compactStrings(keys)
	} else {
		keys = []string{l.Name}
	}
	out := []map[string]interface{}{}
	for _, k := range keys {
		u, err := b.counter(ctx, s, l, k, now)
		if err != nil {
			return nil, err
		}
		m := map[string]interface{}{"calls": u.Calls, "usd": math.Round(u.USD*1e6) / 1e6, "state": limitState(l.share(u)),
			"period_start": u.Start.Format(time.RFC3339), "resets_at": periodEnd(l.Period, u.Start).Format(time.RFC3339)}
		if agent, ok := strings.CutPrefix(k, l.Name+"/"); ok {
			m["agent"] = agent
		}
		out = append(out, m)
	}
	return out, nil
}

// requesterOf names whose calls req makes, for limits and approvals: the
// agent, or the caller as last use names it.
func (b *backend) requesterOf(req *logical.Request, agent string) string {
	if agent != "" {
		return agent
	}
	return b.callerOf(req)
}

// limitStates counts the counters of this period at 80% or more of their
// limit and at it, for the metrics.
func (b *backend) limitStates() (warning, reached float64) {
	lm := &b.limits
	lm.mu.Lock()
	defer lm.mu.Unlock()
	now := b.now()
	for _, l := range lm.specs {
		for key, u := range lm.usage {
			if key != l.Name && !strings.HasPrefix(key, l.Name+"/") || !u.Start.Equal(periodStart(l.Period, now)) {
				continue
			}
			switch limitState(l.share(u)) {
			case limitReached:
				reached++
			case limitWarning:
				warning++
			}
		}
	}
	return warning, reached
}
