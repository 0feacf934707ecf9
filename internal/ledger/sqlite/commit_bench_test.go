package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
)

// BenchmarkCommit measures one durable transaction of 5 entries, with and
// without one state row per entry under 16 different key prefixes (the shape of
// per-owner audit rows).
func BenchmarkCommit(b *testing.B) {
	for _, scatter := range []uint64{0, 1, 16} {
		rows := scatter > 0
		b.Run(fmt.Sprintf("state_rows=%v/prefixes=%d", rows, scatter), func(b *testing.B) {
			d, err := sqlite.Open(filepath.Join(b.TempDir(), "l.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			var head *ledger.Head
			seq := uint64(0)
			for b.Loop() {
				es := make([]ledger.Entry, 5)
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
						ws = append(ws, ledger.Write{Key: fmt.Sprintf("usage/%064d/%016x", seq%scatter, seq), Value: make([]byte, 200)})
					}
				}
				if err := d.Commit(context.Background(), es, ws); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
