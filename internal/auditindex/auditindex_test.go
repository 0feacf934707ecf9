package auditindex

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"testing"

	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/modules"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/vault"
)

type entries []ledger.Entry

func (es entries) Entries(_ context.Context, from uint64, limit int) ([]ledger.Entry, error) {
	if from >= uint64(len(es)) {
		return nil, nil
	}
	return es[from:min(uint64(len(es)), from+uint64(limit))], nil
}

func owner(i int) string { return fmt.Sprintf("%064x", i) }

func chain(n int) entries {
	es := entries{{Seq: 0, Kind: ledger.KindGenesis, Payload: []byte(`{}`)}}
	for i := 1; i < n; i++ {
		r := vault.Read{Owner: owner(i % 2), Agent: "*", Service: fmt.Sprintf("svc%d", i%3), Actor: owner(i % 2), ActorRole: "owner", SID: "s", Version: 1}
		kind := vault.KindRead
		if i%5 == 0 {
			kind, r.Reason, r.Version = vault.KindDenied, "not_found", 0
		}
		p, _ := ledger.MarshalPayload(r)
		es = append(es, ledger.Entry{Seq: uint64(i), Time: int64(i), Kind: kind, Payload: p})
	}
	return es
}

func TestObserveQuery(t *testing.T) {
	ctx := context.Background()
	es := chain(2500)
	x := New(es)
	x.Observe(es[:2000])
	x.Observe(es[1990:2500]) // overlaps what was seen: no duplicates
	all, err := x.Usage(ctx, owner(1), vault.UsageFilter{})
	if err != nil || len(all) != 1250 {
		t.Fatalf("owner 1 has %d rows (%v), want 1250", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatal("rows out of order or duplicated")
		}
	}
	denied := 0
	for _, u := range all {
		if u.Result == "denied" {
			denied++
		}
	}
	if denied != 250 {
		t.Fatalf("%d denied rows, want 250", denied)
	}
	only, _ := x.Usage(ctx, owner(0), vault.UsageFilter{Service: "svc2"})
	for _, u := range only {
		if u.Service != "svc2" {
			t.Fatalf("filter let %q through", u.Service)
		}
	}
	if len(only) == 0 {
		t.Fatal("filter matched nothing")
	}
	if none, _ := x.Usage(ctx, owner(7), vault.UsageFilter{}); len(none) != 0 {
		t.Fatalf("unknown owner has %d rows", len(none))
	}
}

// TestUsagePages: From and Limit page through the same rows as one query,
// filters applied before the limit.
func TestUsagePages(t *testing.T) {
	ctx := context.Background()
	es := chain(500)
	x := New(es)
	x.Observe(es)
	f := vault.UsageFilter{Service: "svc1"}
	all, _ := x.Usage(ctx, owner(1), f)
	var paged []vault.Usage
	for f.Limit = 7; ; {
		p, err := x.Usage(ctx, owner(1), f)
		if err != nil || len(p) > 7 {
			t.Fatalf("page from %d: %d rows, %v", f.From, len(p), err)
		}
		paged = append(paged, p...)
		if len(p) < 7 {
			break
		}
		f.From = p[len(p)-1].Seq + 1
	}
	if len(all) < 20 || fmt.Sprint(paged) != fmt.Sprint(all) {
		t.Fatalf("pages of 7 give %d rows, one query %d (or differ)", len(paged), len(all))
	}
	if p, _ := x.Usage(ctx, owner(1), vault.UsageFilter{From: 10_000, Limit: 5}); len(p) != 0 {
		t.Fatalf("from past the end: %d rows", len(p))
	}
}

// trailKinds are the kinds usageOf derives rows from.
var trailKinds = []string{
	vault.KindStored, vault.KindRead, vault.KindDenied, vault.KindDeleted, vault.KindRequested, vault.KindGranted,
	agent.KindPairRequested, agent.KindPairApproved, agent.KindPairDenied, agent.KindScope, agent.KindStatus,
	account.KindCreated, oidc.KindMinted, oidc.KindDenied,
}

// TestOwnerOfMatchesUsage: the owner an entry is filed under at commit is the
// owner of the row derived from it, for every trail kind.
func TestOwnerOfMatchesUsage(t *testing.T) {
	payloads := []string{
		`{"owner":"A","parent":"B","role":"agent","alias":"x","version":2}`,
		`{"parent":"B","owner":"A","role":"agent"}`,
		`{"owner":"A","Owner":"C","parent":"B","role":"agent"}`, // last duplicate wins, in both
	}
	for _, kind := range trailKinds {
		for _, p := range payloads {
			e := &ledger.Entry{Seq: 1, Kind: kind, Payload: []byte(p)}
			want, _, ok := usageOf(e)
			if !ok {
				t.Fatalf("%s %s: usageOf derives no row", kind, p)
			}
			if got, ok := New(nil).ownerOf(e); !ok || got != want {
				t.Fatalf("%s %s: filed under %q (%v), the row's owner is %q", kind, p, got, ok, want)
			}
		}
	}
}

// FuzzOwnerOf: whatever the payload, an entry usageOf puts in a trail is filed
// under that trail's owner.
func FuzzOwnerOf(f *testing.F) {
	for i, k := range trailKinds {
		f.Add(k, []byte(`{"owner":"A","parent":"B","role":"agent"}`))
		f.Add(k, []byte(fmt.Sprintf(`{"owner":null,"parent":"%d","role":"agent","version":"x"}`, i)))
	}
	f.Add("session.issued", []byte(`{"omni":"A"}`))
	f.Fuzz(func(t *testing.T, kind string, payload []byte) {
		e := &ledger.Entry{Seq: 1, Kind: kind, Payload: payload}
		want, _, ok := usageOf(e)
		if !ok || want == "" {
			return // in no trail (an empty owner is no one's)
		}
		if got, ok := New(nil).ownerOf(e); !ok || got != want {
			t.Fatalf("filed under %q (%v), the row's owner is %q", got, ok, want)
		}
	})
}

// TestOwnedEntries: an owner's entries are those with its owner member, its own
// account's creation and sessions, and its agents' creation and sessions; Owned
// returns them by seq range.
func TestOwnedEntries(t *testing.T) {
	a, b, agentOmni := owner(1), owner(2), owner(3)
	pl := func(v any) []byte { p, _ := ledger.MarshalPayload(v); return p }
	es := []ledger.Entry{
		{Seq: 0, Kind: ledger.KindGenesis, Origin: ledger.OriginEnclave, Payload: []byte(`{}`)},
		{Seq: 1, Kind: account.KindCreated, Origin: ledger.OriginEnclave, Payload: pl(account.Account{Omni: a, Role: "owner"})},
		{Seq: 2, Kind: account.KindSessionIssued, Origin: ledger.AccountOrigin(a), Payload: pl(account.Session{SID: "s1", Omni: a, Role: "owner"})},
		{Seq: 3, Kind: account.KindCreated, Origin: ledger.OriginEnclave, Payload: pl(account.Account{Omni: b, Role: "owner"})},
		{Seq: 4, Kind: vault.KindRead, Origin: ledger.AccountOrigin(b), Payload: pl(vault.Read{Owner: b, Agent: "*", Service: "x", Actor: b})},
		{Seq: 5, Kind: account.KindCreated, Origin: ledger.OriginEnclave, Payload: pl(account.Account{Omni: agentOmni, Role: "agent", Parent: a, Alias: "bot"})},
		{Seq: 6, Kind: account.KindSessionIssued, Origin: ledger.AccountOrigin(agentOmni), Payload: pl(account.Session{SID: "s2", Omni: agentOmni, Role: "agent"})},
		{Seq: 7, Kind: vault.KindRead, Origin: ledger.AccountOrigin(agentOmni), Payload: pl(vault.Read{Owner: a, Agent: "bot", Service: "x", Actor: agentOmni})},
		{Seq: 8, Kind: account.KindSessionRevoke, Origin: ledger.AccountOrigin(a), Payload: pl(account.Revocation{SID: "s2", Reason: "agent revoked"})},
		{Seq: 9, Kind: ledger.KindCheckpoint, Origin: ledger.OriginEnclave, Payload: []byte(`{}`)},
		{Seq: 10, Kind: "credential.stored", Origin: ledger.AccountOrigin(b), Commitment: &ledger.Hash{1}}, // redacted: no payload
	}
	x := New(entries(es))
	x.Observe(es)
	for _, c := range []struct {
		owner    string
		from, to uint64
		want     []uint64
	}{
		{a, 0, math.MaxUint64, []uint64{1, 2, 5, 6, 7, 8}},
		{b, 0, math.MaxUint64, []uint64{3, 4}},
		{a, 2, 6, []uint64{2, 5, 6}},
		{a, 3, 4, []uint64{}},
		{agentOmni, 0, math.MaxUint64, []uint64{}},
	} {
		if got := x.Owned(c.owner, c.from, c.to); !slices.Equal(got, c.want) {
			t.Errorf("Owned(%s…, %d, %d) = %v, want %v", c.owner[:6], c.from, c.to, got, c.want)
		}
	}
}

// TestEveryModuleKind: the index files an entry of every private kind of the
// module list under its owner (an agent's under the agent's owner), shows a row
// for every kind that declares one, and files no public kind: it knows each
// kind from its module, so a kind added there needs nothing here.
func TestEveryModuleKind(t *testing.T) {
	ctx := context.Background()
	p, agentOmni := owner(1), owner(2)
	payload := fmt.Appendf(nil, `{"owner":%q,"actor":%q,"omni":%q,"parent":%q,"role":"agent","alias":"bot","service":"svc"}`, p, agentOmni, agentOmni, p)
	es := entries{{Seq: 0, Kind: account.KindCreated, Origin: ledger.OriginEnclave, Payload: payload}} // teaches agentOmni's owner
	var private, public, rows []uint64
	for _, m := range modules.All {
		for _, kind := range slices.Sorted(maps.Keys(m.Kinds)) {
			k, seq := m.Kinds[kind], uint64(len(es))
			origin := ledger.AccountOrigin(agentOmni)
			if k.Public {
				origin, public = ledger.OriginGovernance, append(public, seq)
			} else {
				private = append(private, seq)
			}
			if k.Usage != nil {
				rows = append(rows, seq)
			}
			es = append(es, ledger.Entry{Seq: seq, Kind: kind, Origin: origin, Payload: payload})
		}
	}
	x := New(es)
	x.Observe(es)
	if got := x.Owned(p, 1, math.MaxUint64); !slices.Equal(got, private) {
		t.Errorf("filed under the owner: %v, want every private kind's entry %v (public ones %v are no one's)", got, private, public)
	}
	us, err := x.Usage(ctx, p, vault.UsageFilter{From: 1})
	var got []uint64
	for _, u := range us {
		got = append(got, u.Seq)
	}
	if err != nil || len(rows) < 10 || !slices.Equal(got, rows) {
		t.Errorf("rows of seqs %v (%v), want one for each kind with a Usage: %v", got, err, rows)
	}
}

// BenchmarkObserve is the index's cost on the committer's path: filing one
// credential read (an agent's, so its owner is found through the parent).
func BenchmarkObserve(b *testing.B) {
	p, agentOmni := owner(1), owner(2)
	pl := func(v any) []byte { q, _ := ledger.MarshalPayload(v); return q }
	x := New(nil)
	x.Observe([]ledger.Entry{{Seq: 0, Kind: account.KindCreated, Origin: ledger.OriginEnclave, Payload: pl(account.Account{Omni: agentOmni, Role: "agent", Parent: p, Alias: "bot"})}})
	read := pl(vault.Read{Owner: p, Agent: "bot", Service: "openai", Actor: agentOmni, ActorRole: "agent", Alias: "bot", SID: "s", Version: 3})
	es := make([]ledger.Entry, 1)
	b.ReportAllocs()
	for i := 1; b.Loop(); i++ {
		es[0] = ledger.Entry{Seq: uint64(i), Kind: vault.KindRead, Origin: ledger.AccountOrigin(agentOmni), Payload: read}
		x.Observe(es)
	}
}
