package ledger_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// BenchmarkAppend measures durable appends (SQLite WAL, synchronous=FULL) from one
// writer and from 16 concurrent writers sharing group commits. Each Append returns
// only after its entry is durable.
func BenchmarkAppend(b *testing.B) {
	benchAppend(b, func(b *testing.B) *fixture { return newFixture(b, ledger.Options{}, 1) })
}

// benchAppend runs BenchmarkAppend's cases on the fixtures newFix makes.
func benchAppend(b *testing.B, newFix func(b *testing.B) *fixture) {
	for _, origin := range []string{"enclave", "account"} {
		for _, writers := range []int{1, 16} {
			b.Run(fmt.Sprintf("origin=%s/writers=%d", origin, writers), func(b *testing.B) {
				f := newFix(b)
				from := ledger.OriginEnclave
				if origin == "account" {
					from = ledger.AccountOrigin(f.account(b, 0))
				}
				ctx := context.Background()
				var n atomic.Int64
				appendOne := func() {
					if _, err := f.l.Append(ctx, from, "test.note", map[string]int64{"N": n.Add(1)}); err != nil {
						b.Error(err)
					}
				}
				b.ResetTimer()
				if writers == 1 {
					for b.Loop() {
						appendOne()
					}
				} else {
					b.SetParallelism(writers / max(1, testingProcs()))
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							appendOne()
						}
					})
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
			})
		}
	}
}

func testingProcs() int { return runtime.GOMAXPROCS(0) }
