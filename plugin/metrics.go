package credentials

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// engineMetrics are one mount's health series for operators: refreshes by
// mode and outcome, the due backlog and tick lag, grants held in memory
// and calls through the broker. Vault does not collect an external
// plugin's telemetry, so they are read from the mount itself
// (orgs/<org>/metrics, JSON or Prometheus text). Labels are fixed words,
// never a credential's name.
type engineMetrics struct {
	registry    *prometheus.Registry
	refreshes   *prometheus.CounterVec
	dueBacklog  prometheus.Gauge
	tickLag     prometheus.Gauge
	brokerCalls *prometheus.CounterVec
}

func newEngineMetrics(b *backend) *engineMetrics {
	m := &engineMetrics{
		registry: prometheus.NewRegistry(),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credentials_refreshes_total",
			Help: "OAuth refreshes by mode (on_use, scheduled, forced, recovery) and outcome (ok, transient, grant_dead, refused, fenced, deferred).",
		}, []string{"mode", "outcome"}),
		dueBacklog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credentials_refresh_due_backlog",
			Help: "Grants that were due for a scheduled refresh at the last tick.",
		}),
		tickLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credentials_refresh_tick_lag_seconds",
			Help: "How long the oldest due refresh had been waiting at the last tick.",
		}),
		brokerCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credentials_broker_calls_total",
			Help: "Calls through the broker by path (vault, edge, mail) and outcome (the service's status class, issued for the edge, failed).",
		}, []string{"path", "outcome"}),
	}
	held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "credentials_grants_held_in_memory",
		Help: "Refreshed grants whose storing failed, held in memory until stored.",
	}, func() float64 { return float64(len(b.oauth.heldNames())) })
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "credentials_last_uses_pending",
		Help: "Credentials whose last use is not stored yet (stored within 5 s).",
	}, func() float64 { return float64(b.lastUse.pendingCount()) })
	warning := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "credentials_limits_warning",
		Help: "Limits (per agent, for agent=*) at 80% or more of their calls or spend this period, not yet reached.",
	}, func() float64 { w, _ := b.limitStates(); return w })
	reached := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "credentials_limits_reached",
		Help: "Limits (per agent, for agent=*) reached this period: their calls are refused until it ends.",
	}, func() float64 { _, r := b.limitStates(); return r })
	m.registry.MustRegister(m.refreshes, m.dueBacklog, m.tickLag, m.brokerCalls, held, pending, warning, reached)
	return m
}

func (m *engineMetrics) refresh(mode refreshMode, outcome string) {
	m.refreshes.WithLabelValues(mode.String(), outcome).Inc()
}

// call counts a broker call; status 0 means it failed before an answer.
func (m *engineMetrics) call(path string, status int) {
	outcome := "failed"
	if status > 0 {
		outcome = fmt.Sprintf("%dxx", status/100)
	}
	m.brokerCalls.WithLabelValues(path, outcome).Inc()
}

// tick records what a scheduled tick found due.
func (m *engineMetrics) tick(due int, oldest time.Time, now time.Time) {
	m.dueBacklog.Set(float64(due))
	lag := 0.0
	if due > 0 && !oldest.IsZero() && now.After(oldest) {
		lag = now.Sub(oldest).Seconds()
	}
	m.tickLag.Set(lag)
}

// text is the Prometheus text exposition of every series.
func (m *engineMetrics) text() ([]byte, error) {
	families, err := m.registry.Gather()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// values is every series as name{labels} -> value, for the CLI.
func (m *engineMetrics) values() (map[string]interface{}, error) {
	families, err := m.registry.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			key := f.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case s.Counter != nil:
				out[key] = s.Counter.GetValue()
			case s.Gauge != nil:
				out[key] = s.Gauge.GetValue()
			}
		}
	}
	return out, nil
}
