package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
)

// BenchmarkCommit measures one durable transaction of 5 entries, with and
// without one state row per entry under 16 different key prefixes (the shape of
// per-owner audit rows), and of 1 entry (a commit under light load). cpu_us/op
// is the process's CPU per commit (user and system, fsync included).
func BenchmarkCommit(b *testing.B) {
	for _, c := range []struct {
		entries int
		scatter uint64
	}{{5, 0}, {5, 1}, {5, 16}, {1, 0}} {
		rows := c.scatter > 0
		b.Run(fmt.Sprintf("entries=%d/state_rows=%v/prefixes=%d", c.entries, rows, c.scatter), func(b *testing.B) {
			d, err := sqlite.Open(filepath.Join(b.TempDir(), "l.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			var head *ledger.Head
			seq := uint64(0)
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			for b.Loop() {
				es := make([]ledger.Entry, c.entries)
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
						ws = append(ws, ledger.Write{Key: fmt.Sprintf("usage/%064d/%016x", seq%c.scatter, seq), Value: make([]byte, 200)})
					}
				}
				if err := d.Commit(context.Background(), es, ws); err != nil {
					b.Fatal(err)
				}
			}
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
			b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu_us/op")
		})
	}
}
