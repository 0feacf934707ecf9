package postgres_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
)

// BenchmarkCommit measures one durable transaction of n entries (a group commit
// of n appends), with and without one state row per entry, on a throwaway
// cluster: the append ceiling of one chain is entries/s at the larger batches.
// It also reports the stored size per entry (table, indexes and TOAST).
func BenchmarkCommit(b *testing.B) {
	c := pgtest.Start(b)
	for _, batch := range []int{5, 64} {
		for _, rows := range []bool{false, true} {
			b.Run(fmt.Sprintf("entries=%d/state_rows=%v", batch, rows), func(b *testing.B) {
				u := c.NewDatabase(b)
				d, err := postgres.Open(u)
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				var head *ledger.Head
				seq := uint64(0)
				for b.Loop() {
					es := make([]ledger.Entry, batch)
					var ws []ledger.Write
					for i := range es {
						e := ledger.Entry{Seq: seq, Time: int64(seq), Kind: "k", Origin: "enclave", Payload: []byte(`{"owner":"x","service":"svc","version":1}`), Signer: "0x0000000000000000000000000000000000000000", Sig: make([]byte, 65)}
						if head != nil {
							e.PrevHash = head.Hash
						}
						es[i] = e
						head = &ledger.Head{Seq: seq, Hash: e.Hash()}
						seq++
						if rows {
							ws = append(ws, ledger.Write{Key: fmt.Sprintf("usage/%064d/%016x", seq%16, seq), Value: make([]byte, 200)})
						}
					}
					if err := d.Commit(context.Background(), es, ws); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(seq)/b.Elapsed().Seconds(), "entries/s")
				conn, err := pgx.Connect(context.Background(), u)
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close(context.Background())
				var size int64
				if err := conn.QueryRow(context.Background(), `SELECT pg_total_relation_size('entries')`).Scan(&size); err == nil && seq > 0 {
					b.ReportMetric(float64(size)/float64(seq), "entry-bytes")
				}
			})
		}
	}
}
