package mailedge

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/clock"
	"github.com/agentkeys/agentkeys/internal/mail"
)

// TestCacheDeletedInbox: an inbound recipient's live answer is reused for
// LookupTTL, so a deleted inbox is refused once LookupTTL has passed and not
// a moment later; an unknown address, a deleted inbox and a broker error are
// never kept.
func TestCacheDeletedInbox(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(t0)
	d := &directory{inboxes: map[string]*inbox{addrA: {live: true, wallet: walletA}}}
	c := NewCache(d, clk.Now)

	for range 3 {
		if l, err := c.Lookup(ctx, addrA, ""); err != nil || !l.Live || l.Prefix == "" {
			t.Fatalf("live inbox: %+v %v", l, err)
		}
	}
	if d.calls != 1 {
		t.Fatalf("3 lookups within LookupTTL asked the broker %d times, want 1", d.calls)
	}

	d.inboxes[addrA].live = false // deleted at the broker
	clk.Advance(LookupTTL - time.Nanosecond)
	if l, _ := c.Lookup(ctx, addrA, ""); !l.Live {
		t.Fatal("the answer was dropped before LookupTTL")
	}
	clk.Advance(time.Nanosecond)
	if l, err := c.Lookup(ctx, addrA, ""); err != nil || l.Live {
		t.Fatalf("a deleted inbox is still live %s after its last lookup: %+v %v", LookupTTL, l, err)
	}
	calls := d.calls
	if l, _ := c.Lookup(ctx, addrA, ""); l.Live || d.calls != calls+1 {
		t.Fatalf("a deleted inbox's answer was kept: %+v, %d calls", l, d.calls-calls)
	}
	for range 2 {
		if l, _ := c.Lookup(ctx, addrB, ""); l.Live {
			t.Fatal("unknown address is live")
		}
	}
	if d.calls != calls+3 {
		t.Fatalf("an unknown address's answer was kept: %d calls, want %d", d.calls, calls+3)
	}

	// A new inbox takes mail at once: nothing negative was remembered.
	d.inboxes[addrB] = &inbox{live: true, wallet: walletB}
	if l, _ := c.Lookup(ctx, addrB, ""); !l.Live {
		t.Fatal("a new inbox is refused after an earlier refusal")
	}

	// A clock that went back does not stretch an answer's life.
	d.inboxes[addrB].live = false
	clk.Advance(-time.Hour)
	if l, _ := c.Lookup(ctx, addrB, ""); l.Live {
		t.Fatal("an answer outlived LookupTTL when the clock went back")
	}
}

// TestCacheRightsUncached: lookups for an agent's rights (submission, IMAP)
// always reach the broker, so a revoked grant acts on the next message.
func TestCacheRightsUncached(t *testing.T) {
	ctx := context.Background()
	d := &directory{inboxes: map[string]*inbox{addrA: {live: true, wallet: walletA, rights: map[string][]string{omniA: {mail.Send}}}}}
	c := NewCache(d, clock.NewFake(t0).Now)
	if ok, err := Holds(ctx, c, omniA, addrA, mail.Send); !ok || err != nil {
		t.Fatalf("send held: %v %v", ok, err)
	}
	d.inboxes[addrA].rights[omniA] = nil // revoked
	if ok, _ := Holds(ctx, c, omniA, addrA, mail.Send); ok {
		t.Fatal("a revoked send right still holds through the cache")
	}
	if d.calls != 2 {
		t.Fatalf("%d broker calls for 2 rights lookups", d.calls)
	}
}

// TestCacheError: a broker that does not answer is not an answer to keep.
func TestCacheError(t *testing.T) {
	ctx := context.Background()
	fail := errors.New("broker down")
	n := 0
	c := NewCache(LookupFunc(func(context.Context, string, string) (apiv1.MailLookup, error) {
		n++
		return apiv1.MailLookup{}, fail
	}), clock.NewFake(t0).Now)
	for range 2 {
		if _, err := c.Lookup(ctx, addrA, ""); !errors.Is(err, fail) {
			t.Fatalf("error lost: %v", err)
		}
	}
	if n != 2 {
		t.Fatalf("an error was kept: %d calls", n)
	}
}
