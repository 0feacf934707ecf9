package audit_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// recording serves src's chain and records where each read started.
type recording struct {
	src   audit.EntrySource
	mu    sync.Mutex
	froms []uint64
}

func (r *recording) Entries(ctx context.Context, from uint64, limit int) (*apiv1.EntriesPage, error) {
	r.mu.Lock()
	r.froms = append(r.froms, from)
	r.mu.Unlock()
	return r.src.Entries(ctx, from, limit)
}

// saved verifies e's token with a new view and returns the view as saved, the
// pins, and the seq of the last entry it verified.
func saved(t *testing.T, e *env) ([]byte, audit.Pins, uint64) {
	t.Helper()
	pins, err := audit.Attest(context.Background(), e.c, "")
	if err != nil {
		t.Fatal(err)
	}
	v := audit.NewKeyView(e.c, pins)
	if _, err := v.VerifyToken(context.Background(), e.token, e.at.Now()); err != nil {
		t.Fatal(err)
	}
	b, err := v.Save()
	if err != nil || len(b) == 0 {
		t.Fatalf("save: %v", err)
	}
	h, _, _ := e.b.Storage().Head(context.Background())
	return b, pins, h.Seq
}

// A saved view resumes where it stopped: it reads only from its last entry on
// (which the chain must still hold), and sees what was appended since (here a
// revoke of the token's kid).
func TestSavedViewResumes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	data, pins, last := saved(t, e)
	rec := &recording{src: e.c}
	v, err := audit.ResumeKeyView(rec, pins, data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyToken(ctx, e.token, e.at.Now()); err != nil {
		t.Fatalf("resumed view, genuine token: %v", err)
	}
	if len(rec.froms) != 1 || rec.froms[0] != last {
		t.Fatalf("the resumed view read from %v, want only from its last entry %d", rec.froms, last)
	}
	if _, err := e.c.SubmitGovernance(ctx, registry.KindOidcKeyRevoke, registry.OidcRevoke{Kid: e.kid, Reason: "test"}, e.op); err != nil {
		t.Fatal(err)
	}
	v, err = audit.ResumeKeyView(e.c, pins, data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyToken(ctx, e.token, e.at.Now()); !rejected(err) {
		t.Fatalf("a resumed view missed the revoke appended after it was saved: %v", err)
	}
	// saved again, and resumed, it still refuses the revoked kid
	data2, err := v.Save()
	if err != nil {
		t.Fatal(err)
	}
	v, _ = audit.ResumeKeyView(e.c, pins, data2)
	if _, err := v.VerifyToken(ctx, e.token, e.at.Now()); !rejected(err) {
		t.Fatalf("the view saved after the revoke: %v", err)
	}
}

// A resumed view refuses a chain that does not extend the one it verified:
// a fork or a rollback at its last entry, or a tampered entry after it. It
// never starts over by itself, and a view saved under other pins, or that is
// not a saved view, is not resumed at all.
func TestSavedViewRefusesAForkedOrTamperedChain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	data, pins, last := saved(t, e)
	if _, err := e.c.SubmitGovernance(ctx, registry.KindOidcKeyRevoke, registry.OidcRevoke{Kid: "another-kid", Reason: "test"}, e.op); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]audit.EntrySource{
		"forked at its last entry": tamper{e.c, func(es []ledger.Entry) {
			for i := range es {
				if es[i].Seq == last {
					es[i].Time++
				}
			}
		}},
		"rolled back before its last entry": rolledBack{e.c, last},
		"tampered after it": tamper{e.c, func(es []ledger.Entry) {
			for i := range es {
				if es[i].Seq > last && es[i].Kind == registry.KindOidcKeyRevoke {
					es[i].Payload = []byte(`{"kid":"` + e.kid + `","reason":"test"}`)
				}
			}
		}},
	} {
		v, err := audit.ResumeKeyView(src, pins, data)
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.VerifyToken(ctx, e.token, e.at.Now())
		if p := problem.As(err); err == nil || p.Code != problem.LedgerInvalid {
			t.Errorf("%s: %v, want LEDGER_INVALID", name, err)
		}
	}
	other := pins
	other.PlatformKey = strings.Repeat("cd", 32)
	for name, c := range map[string]struct {
		pins audit.Pins
		data []byte
	}{
		"other pins":      {other, data},
		"not a view":      {pins, []byte(`{"version":1}`)},
		"garbage":         {pins, []byte("not json")},
		"unknown version": {pins, []byte(strings.Replace(string(data), `"version":1`, `"version":2`, 1))},
	} {
		if _, err := audit.ResumeKeyView(e.c, c.pins, c.data); err == nil {
			t.Errorf("%s: resumed", name)
		}
	}
}

// rolledBack serves the chain as it was before seq last.
type rolledBack struct {
	src  audit.EntrySource
	last uint64
}

func (r rolledBack) Entries(ctx context.Context, from uint64, limit int) (*apiv1.EntriesPage, error) {
	if from >= r.last {
		return &apiv1.EntriesPage{Entries: []ledger.Entry{}, Next: from}, nil
	}
	return r.src.Entries(ctx, from, min(limit, int(r.last-from)))
}
