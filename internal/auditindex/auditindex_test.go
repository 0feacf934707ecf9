package auditindex

import (
	"context"
	"fmt"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
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
