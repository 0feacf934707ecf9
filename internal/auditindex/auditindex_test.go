package auditindex

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

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

func TestFollowQueryRebuild(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	es := chain(2500)
	x, err := Open(path, es, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Bind(es[0].Hash(), 2499); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go x.Follow(ctx)
	if err := x.WaitFor(ctx, 2499); err != nil {
		t.Fatal(err)
	}
	all, _ := x.Usage(ctx, owner(1), vault.UsageFilter{})
	if len(all) != 1250 {
		t.Fatalf("owner 1 has %d rows, want 1250", len(all))
	}
	denied, _ := x.Usage(ctx, owner(1), vault.UsageFilter{Service: "svc0"})
	for _, u := range denied {
		if u.Service != "svc0" {
			t.Fatalf("filter let %q through", u.Service)
		}
	}
	n := 0
	for _, u := range all {
		if u.Result == "denied" {
			n++
		}
	}
	if n != 250 {
		t.Fatalf("%d denied rows, want 250", n)
	}
	x.Close()
	// Another chain (genesis differs): the index starts over and rebuilds.
	other := chain(10)
	other[0].Payload = []byte(`{"other":1}`)
	y, err := Open(path, other, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	if err := y.Bind(other[0].Hash(), 9); err != nil {
		t.Fatal(err)
	}
	go y.Follow(ctx)
	if err := y.WaitFor(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if rows, _ := y.Usage(ctx, owner(1), vault.UsageFilter{}); len(rows) != 5 {
		t.Fatalf("after rebind: %d rows, want 5", len(rows))
	}
}
