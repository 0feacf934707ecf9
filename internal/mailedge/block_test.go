package mailedge

import (
	"fmt"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/clock"
)

// fullOfBlocks is an edge whose table of blocked addresses is full, the
// blocks ending one second apart from a second ahead of its clock on.
func fullOfBlocks() (*Edge, *clock.Fake) {
	clk := clock.NewFake(time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC))
	e := &Edge{cfg: Config{Now: clk.Now}, blocked: map[string]time.Time{}}
	for i := range maxBlocked {
		e.blockAuth(fmt.Sprintf("10.0.%d.%d", i/256, i%256), clk.Now().Add(time.Duration(i+1)*time.Second))
	}
	return e, clk
}

// TestBlockAuthFullTable: a full table of live blocks remembers no new one
// (and keeps every live one); once the earliest block has ended, a new one
// takes its place, and the table never grows past its bound.
func TestBlockAuthFullTable(t *testing.T) {
	e, clk := fullOfBlocks()
	if len(e.blocked) != maxBlocked {
		t.Fatalf("%d blocks remembered, want %d", len(e.blocked), maxBlocked)
	}
	e.blockAuth("new", clk.Now().Add(time.Hour))
	if _, ok := e.authBlocked("new"); ok || len(e.blocked) != maxBlocked {
		t.Fatalf("a full table of live blocks took a new one (%d blocks)", len(e.blocked))
	}
	if _, ok := e.authBlocked("10.0.0.0"); !ok {
		t.Fatal("a live block was dropped to make room")
	}
	clk.Advance(1500 * time.Millisecond) // the first block ended
	e.blockAuth("new", clk.Now().Add(time.Hour))
	if _, ok := e.authBlocked("new"); !ok {
		t.Fatal("a new block was refused after a block ended")
	}
	if _, ok := e.authBlocked("10.0.0.1"); !ok || len(e.blocked) != maxBlocked {
		t.Fatalf("after the sweep: the second block gone or %d blocks, want %d", len(e.blocked), maxBlocked)
	}
	// A block that ends earlier than any remembered one moves the next sweep
	// forward: once it ended, the table has room again.
	delete(e.blocked, "10.0.0.1") // room for one
	e.blockAuth("early", clk.Now().Add(100*time.Millisecond))
	clk.Advance(200 * time.Millisecond)
	e.blockAuth("later", clk.Now().Add(time.Hour))
	if _, ok := e.authBlocked("later"); !ok {
		t.Fatal("the early block ended, yet the full table took no new one")
	}
}

// BenchmarkBlockAuthFull is one more failing address while the table is full
// of live blocks.
func BenchmarkBlockAuthFull(b *testing.B) {
	e, clk := fullOfBlocks()
	until := clk.Now().Add(time.Hour)
	for b.Loop() {
		e.blockAuth("another", until)
	}
}
