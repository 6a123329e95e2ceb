package credentials

import (
	"context"
	"hash/fnv"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Health checks: API keys (of services with a verify call) and SMTP
// logins are verified on the org's schedule (config
// health_check_interval, default daily), each at its own time: a fixed
// jitter of up to a tenth of the interval, from its name, spreads
// credentials stored together. A credential never checked is due at once,
// and storing one wakes the checks.
// A pass takes at most healthPerPass due credentials, healthConcurrent at a
// time, so a large org's backlog spreads over passes. The outcome is
// verify's: a refusal needs attention, a success clears verify's own
// failure, an unreachable service changes nothing; each change is a
// webhook event.

const (
	// healthEvery is how often the schedule is looked at: a refused key
	// needs attention within one pass of being due.
	healthEvery      = 10 * time.Second
	healthPerPass    = 32
	healthConcurrent = 4
	healthTimeout    = time.Minute
)

func (b *backend) startHealthChecks(bg *background) {
	bg.loop(healthEvery, b.healthWake, b.writeSafe, func(ctx context.Context) {
		if err := b.checkHealth(ctx, b.storage); err != nil && ctx.Err() == nil {
			b.logger.Warn("health checks", "error", err)
		}
	})
}

// healthSoon wakes the checks for c when it was never checked: a key just
// stored is checked at once, not at the next pass.
func (b *backend) healthSoon(c *credential) {
	if !c.CheckedAt.IsZero() || (c.Type != typeAPIKey && c.Type != typePassword) {
		return
	}
	select {
	case b.healthWake <- struct{}{}:
	default:
	}
}

// checkHealth verifies the credentials due.
func (b *backend) checkHealth(ctx context.Context, s logical.Storage) error {
	due, err := b.healthDue(ctx, s)
	if err != nil || len(due) == 0 {
		return err
	}
	sem := make(chan struct{}, healthConcurrent)
	var wg sync.WaitGroup
	for _, name := range due {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			cctx, cancel := context.WithTimeout(ctx, healthTimeout)
			defer cancel()
			if _, err := b.verifyCredential(cctx, s, name); err != nil {
				b.logger.Debug("health check", "name", name, "error", err)
			}
		}()
	}
	wg.Wait()
	return nil
}

// healthDue names the credentials due for a check, the longest due first.
func (b *backend) healthDue(ctx context.Context, s logical.Storage) ([]string, error) {
	cfg, err := b.getConfig(ctx, s)
	if err != nil || cfg.HealthCheckInterval == 0 {
		return nil, err
	}
	lines, err := b.index.Lines(ctx, s)
	if err != nil {
		return nil, err
	}
	now := b.now()
	type dueLine struct {
		name string
		at   time.Time
	}
	var due []dueLine
	for _, l := range lines {
		at := nextCheck(l.Name, l.CheckedAt, cfg.HealthCheckInterval)
		if at.After(now) || !b.checkable(ctx, s, l) {
			continue
		}
		due = append(due, dueLine{l.Name, at})
	}
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	var names []string
	for i := 0; i < len(due) && i < healthPerPass; i++ {
		names = append(names, due[i].name)
	}
	return names, nil
}

// nextCheck is when a credential checked at last is due again.
func nextCheck(name string, last time.Time, every time.Duration) time.Time {
	if last.IsZero() {
		return time.Time{}
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	jitter := time.Duration(h.Sum64() % uint64(every/10+1))
	return last.Add(every + jitter)
}

// checkable says whether a health check can verify l: an API key whose
// service has a verify call, or an SMTP login, not disconnected.
func (b *backend) checkable(ctx context.Context, s logical.Storage, l indexLine) bool {
	if l.State == statusDisconnected {
		return false
	}
	switch {
	case l.Type == typePassword && l.Service == smtpService:
		return true
	case l.Type == typeAPIKey:
		svc, err := b.brokerService(ctx, s, l.Service)
		return err == nil && svc != nil && svc.Verify != nil
	}
	return false
}
