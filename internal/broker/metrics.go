package broker

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// metrics are the broker's Prometheus metrics, named by Prometheus
// conventions: counters end in _total, durations are _duration_seconds.
type metrics struct {
	entries prometheus.Counter
	batch   prometheus.Histogram
	commit  prometheus.Histogram
	head    prometheus.Gauge
	ready   prometheus.Gauge
	ledger  atomic.Pointer[ledger.Ledger] // for the queue depth; nil until Start
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		entries: prometheus.NewCounter(prometheus.CounterOpts{Name: "agentkeys_ledger_entries_total", Help: "Entries durably appended to the ledger."}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "agentkeys_ledger_commit_batch_size", Help: "Entries per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11)}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "agentkeys_ledger_commit_duration_seconds",
			Help: "Time the store took to make one group commit durable.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		head:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "agentkeys_ledger_head_seq", Help: "Sequence number of the newest entry."}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Name: "agentkeys_ready", Help: "1 once the seed is unsealed and the ledger verified."}),
	}
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "agentkeys_ledger_queue_depth", Help: "Appends queued for the ledger writer, not yet in a batch."},
		func() float64 {
			if l := m.ledger.Load(); l != nil {
				return float64(l.QueueDepth())
			}
			return 0
		})
	if r != nil {
		r.MustRegister(m.entries, m.batch, m.commit, m.head, m.ready, queue)
	}
	return m
}

// follow reports on l from now on: its head and its queue depth.
func (m *metrics) follow(l *ledger.Ledger) {
	m.ledger.Store(l)
	m.head.Set(float64(l.Head().Seq))
}

func (m *metrics) commitTook(d time.Duration) { m.commit.Observe(d.Seconds()) }

func (m *metrics) committed(es []ledger.Entry) {
	m.entries.Add(float64(len(es)))
	m.batch.Observe(float64(len(es)))
	m.head.Set(float64(es[len(es)-1].Seq))
}
