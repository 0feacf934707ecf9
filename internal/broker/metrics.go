package broker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

type metrics struct {
	entries prometheus.Counter
	batch   prometheus.Histogram
	head    prometheus.Gauge
	ready   prometheus.Gauge
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		entries: prometheus.NewCounter(prometheus.CounterOpts{Name: "agentkeys_ledger_entries_total", Help: "Entries durably appended to the ledger."}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "agentkeys_ledger_commit_batch_size", Help: "Entries per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11)}),
		head:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "agentkeys_ledger_head_seq", Help: "Sequence number of the newest entry."}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Name: "agentkeys_ready", Help: "1 once the seed is unsealed and the ledger verified."}),
	}
	if r != nil {
		r.MustRegister(m.entries, m.batch, m.head, m.ready)
	}
	return m
}

func (m *metrics) committed(es []ledger.Entry) {
	m.entries.Add(float64(len(es)))
	m.batch.Observe(float64(len(es)))
	m.head.Set(float64(es[len(es)-1].Seq))
}
