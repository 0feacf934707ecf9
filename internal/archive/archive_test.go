package archive_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/archive"
	"github.com/agentkeys/agentkeys/internal/blobstore/localstore"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
)

// signer stands in for the enclave's ledger key (the chain here has enclave
// entries only).
type signer struct{ key ed25519.PrivateKey }

func (s signer) LedgerKey() string { return hex.EncodeToString(s.key.Public().(ed25519.PublicKey)) }
func (s signer) SignLedger(h ledger.Hash) ([]byte, error) {
	return ed25519.Sign(s.key, h[:]), nil
}
func (s signer) SignAccount(string, ledger.Hash) ([]byte, error) {
	return nil, errors.New("no accounts")
}

func schema() ledger.Schema {
	return ledger.Schema{Kinds: map[string]ledger.Kind{
		"test.note": {Origins: ledger.FromEnclave, Public: true, Fold: func(st ledger.State, e *ledger.Entry) error {
			var p struct{ N int }
			if err := ledger.DecodeStrict(e.Payload, &p); err != nil {
				return err
			}
			return st.Put("note/last", e.Payload)
		}},
	}}
}

// chain is a ledger on SQLite with n notes and a checkpoint every 10 entries.
type chain struct {
	path string
	d    *sqlite.Driver
	l    *ledger.Ledger
	s    signer
}

func newChain(t *testing.T, seed byte, n int) *chain {
	t.Helper()
	c := &chain{path: filepath.Join(t.TempDir(), "ledger.db"), s: signer{ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32))}}
	var err error
	if c.d, err = sqlite.Open(c.path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.close() })
	gov := ledger.Governance{Threshold: 1, Keys: []string{c.s.LedgerKey()}}
	c.l, err = ledger.Open(context.Background(), c.d, schema(), c.s, ledger.Options{CheckpointEvery: 10,
		Genesis: func() (*ledger.Genesis, error) { return &ledger.Genesis{Governance: gov}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	c.notes(t, n)
	return c
}

func (c *chain) notes(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		if _, err := c.l.Append(context.Background(), ledger.OriginEnclave, "test.note", map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
}

func (c *chain) close() {
	if c.l != nil {
		c.l.Close()
		c.l = nil
	}
	if c.d != nil {
		c.d.Close()
		c.d = nil
	}
}

func (c *chain) head(t *testing.T) uint64 {
	h, _, err := c.d.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h.Seq
}

func newArchive(t *testing.T, dir string) *archive.Archive {
	t.Helper()
	st, err := localstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := archive.New(st, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// verifyOffline walks the archive with nothing but the ledger key.
func verifyOffline(a *archive.Archive, key string) ([]archive.Ref, error) {
	return a.Walk(context.Background(), key, ledger.NewVerifier(schema(), ledger.NewMemState()), nil)
}

// TestExportVerifyOffline: an export is a run of segments, each closed by a
// signed checkpoint, that verify with the ledger key alone; exporting again
// writes nothing; exporting further resumes after the last segment.
func TestExportVerifyOffline(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 1, 95)
	dir := t.TempDir()
	a := newArchive(t, dir)
	before := c.head(t) - 5
	var calls int
	got, err := archive.Export(ctx, a, c.d, before, 25, func(done, total uint64) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if got.Written < 2 || got.Before > before || got.Before+20 < before || calls == 0 {
		t.Fatalf("export: %+v (requested before %d, %d progress calls)", got, before, calls)
	}
	refs, err := verifyOffline(a, c.s.LedgerKey())
	if err != nil {
		t.Fatalf("offline verify: %v", err)
	}
	if len(refs) != got.Written || refs[len(refs)-1].Last+1 != got.Before {
		t.Fatalf("refs %+v after %+v", refs, got)
	}
	for _, r := range refs {
		fi, err := os.Stat(filepath.Join(dir, r.Key))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("segment file %s: %v %v", r.Key, fi.Mode(), err)
		}
	}
	// Another key: refused.
	if _, err := verifyOffline(a, signer{ed25519.NewKeyFromSeed(make([]byte, 32))}.LedgerKey()); !errors.Is(err, archive.ErrInvalid) {
		t.Fatalf("verify with another ledger key: %v", err)
	}
	again, err := archive.Export(ctx, a, c.d, before, 25, nil)
	if err != nil || again.Written != 0 || again.Present != got.Written || again.Before != got.Before {
		t.Fatalf("export again: %+v %v", again, err)
	}
	c.notes(t, 40)
	more, err := archive.Export(ctx, a, c.d, c.head(t), 25, nil)
	if err != nil || more.Written == 0 || more.Present != got.Written || more.Before <= got.Before {
		t.Fatalf("export further: %+v %v", more, err)
	}
	if _, err := verifyOffline(a, c.s.LedgerKey()); err != nil {
		t.Fatalf("offline verify after resuming: %v", err)
	}
	// An archive of another chain is refused, not extended.
	other := newChain(t, 2, 30)
	if _, err := archive.Export(ctx, a, other.d, other.head(t), 25, nil); !errors.Is(err, archive.ErrInvalid) {
		t.Fatalf("exporting another ledger into this archive: %v", err)
	}
}

// TestTamperCaught: changing one byte of a segment (a payload, a signature, a
// manifest field), or dropping a segment, fails verification.
func TestTamperCaught(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 1, 60)
	key := c.s.LedgerKey()
	for _, tc := range []struct {
		name string
		old  string
		new  string
		nth  int // which occurrence
	}{
		{"payload", `{"n":7}`, `{"n":8}`, 0},
		{"checkpoint signature", `"kind":"checkpoint"`, ``, 0}, // handled below: flips a sig byte
		{"manifest", `"first":`, `"first":1`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a := newArchive(t, dir)
			if _, err := archive.Export(ctx, a, c.d, c.head(t), 20, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := verifyOffline(a, key); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			refs, _ := a.List(ctx)
			path := filepath.Join(dir, refs[0].Key)
			b, _ := os.ReadFile(path)
			var bad []byte
			if tc.new == "" { // one byte of the last signature in the segment
				i := bytes.LastIndex(b, []byte(`"sig":"`)) + len(`"sig":"`)
				bad = bytes.Clone(b)
				bad[i] ^= 1
				if bad[i] == b[i] || !strings.ContainsRune("0123456789abcdef", rune(bad[i])) {
					bad[i] = map[bool]byte{true: '1', false: '0'}[b[i] == '0']
				}
			} else {
				if !bytes.Contains(b, []byte(tc.old)) {
					t.Fatalf("segment has no %s", tc.old)
				}
				bad = bytes.Replace(b, []byte(tc.old), []byte(tc.new), 1)
			}
			os.Chmod(path, 0o600)
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := verifyOffline(a, key); !errors.Is(err, archive.ErrInvalid) {
				t.Fatalf("tampered segment verified: %v", err)
			}
			// the segment alone (what a broker serving history checks) fails too
			if s, err := a.Get(ctx, refs[0]); err == nil {
				if err := s.Check(key); !errors.Is(err, archive.ErrInvalid) {
					t.Fatalf("tampered segment checked alone: %v", err)
				}
			}
			// and prune refuses to rely on it, dropping nothing
			if _, err := archive.Prune(ctx, a, c.d, c.head(t), ledger.NewVerifier(schema(), ledger.NewMemState()), nil); err == nil {
				t.Fatal("prune relied on a tampered archive")
			}
			if es, _ := c.d.Entries(ctx, 1, 1); len(es) != 1 || es[0].Seq != 1 {
				t.Fatalf("entries dropped after a refused prune: %+v", es)
			}
		})
	}
	t.Run("missing segment", func(t *testing.T) {
		dir := t.TempDir()
		a := newArchive(t, dir)
		if _, err := archive.Export(ctx, a, c.d, c.head(t), 20, nil); err != nil {
			t.Fatal(err)
		}
		refs, _ := a.List(ctx)
		os.Remove(filepath.Join(dir, refs[1].Key))
		if _, err := verifyOffline(a, key); !errors.Is(err, archive.ErrInvalid) {
			t.Fatalf("archive with a gap verified: %v", err)
		}
	})
}

// TestPrune: prune refuses without an export that covers the cut; after one,
// the store keeps genesis and the anchor, verifies from it, goes on appending,
// and the archive serves what it dropped.
func TestPrune(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 1, 80)
	a := newArchive(t, t.TempDir())
	fresh := func() *ledger.Verifier { return ledger.NewVerifier(schema(), ledger.NewMemState()) }
	if _, err := archive.Prune(ctx, a, c.d, 50, fresh(), nil); err == nil {
		t.Fatal("prune without an export")
	}
	// An export of another ledger does not cover this one.
	other := newChain(t, 2, 80)
	oa := newArchive(t, t.TempDir())
	if _, err := archive.Export(ctx, oa, other.d, 60, 20, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := archive.Prune(ctx, oa, c.d, 50, fresh(), nil); err == nil {
		t.Fatal("prune relied on another ledger's archive")
	}
	exp, err := archive.Export(ctx, a, c.d, 50, 20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if es, _ := c.d.Entries(ctx, 1, 1); len(es) != 1 || es[0].Seq != 1 {
		t.Fatal("a refused prune dropped entries")
	}
	got, err := archive.Prune(ctx, a, c.d, 50, fresh(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Before != exp.Before || got.Segments != exp.Written {
		t.Fatalf("prune %+v after export %+v", got, exp)
	}
	es, _ := c.d.Entries(ctx, 0, 2)
	if len(es) != 2 || es[0].Seq != 0 || es[1].Seq != got.Before {
		t.Fatalf("store after prune starts %d, %d; want genesis, then %d", es[0].Seq, es[1].Seq, got.Before)
	}
	if again, err := archive.Prune(ctx, a, c.d, 50, fresh(), nil); err != nil || !again.Already {
		t.Fatalf("prune again: %+v %v", again, err)
	}
	// A pruned store cannot start another archive: its old entries are gone.
	if _, err := archive.Export(ctx, newArchive(t, t.TempDir()), c.d, got.Before+5, 20, nil); err == nil || !strings.Contains(err.Error(), "no longer holds entry 1 ") {
		t.Fatalf("exporting a pruned store to an empty archive: %v", err)
	}
	// Start-up's verification resumes at the anchor; a full re-fold needs the archive.
	if _, _, err := ledger.VerifyFrom(ctx, schema(), c.d, nil); err != nil {
		t.Fatalf("verify from the anchor: %v", err)
	}
	if _, err := ledger.VerifyDriver(ctx, schema(), c.d, true); !errors.Is(err, ledger.ErrPruned) {
		t.Fatalf("re-folding a pruned store without its archive: %v", err)
	}
	// Reopened, the ledger goes on appending after the cut.
	c.l.Close()
	c.l = nil
	l, err := ledger.Open(ctx, c.d, schema(), c.s, ledger.Options{CheckpointEvery: 10})
	if err != nil {
		t.Fatalf("reopening a pruned ledger: %v", err)
	}
	c.l = l
	c.notes(t, 15)
	if _, _, err := ledger.VerifyFrom(ctx, schema(), c.d, nil); err != nil {
		t.Fatalf("verify after appending: %v", err)
	}
	// The archive serves the dropped entries; they link to the store's first kept one.
	r := archive.NewReader(a, c.s.LedgerKey())
	old, err := r.Entries(ctx, 1, 1000)
	if err != nil || len(old) == 0 || old[0].Seq != 1 {
		t.Fatalf("reader from 1: %d entries, %v", len(old), err)
	}
	last, err := r.Entries(ctx, got.Before-1, 5)
	if err != nil || len(last) != 1 || es[1].PrevHash != last[0].Hash() {
		t.Fatalf("the archive's last entry does not link to the store's first kept one: %+v %v", last, err)
	}
	if none, err := r.Entries(ctx, got.Before, 5); err != nil || len(none) != 0 {
		t.Fatalf("reader past the archive: %d %v", len(none), err)
	}
	// A tampered anchor stops start-up's verification.
	c.close()
	db, err := sql.Open("sqlite", "file:"+c.path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var body []byte
	if err := db.QueryRow(`SELECT body FROM anchor`).Scan(&body); err != nil {
		t.Fatal(err)
	}
	var an ledger.Anchor
	if err := json.Unmarshal(body, &an); err != nil {
		t.Fatal(err)
	}
	an.Entry.Sig[0] ^= 1
	body, _ = json.Marshal(an)
	if _, err := db.Exec(`UPDATE anchor SET body = ?`, body); err != nil {
		t.Fatal(err)
	}
	d, err := sqlite.OpenReadOnly(c.path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var ce *ledger.ChainError
	if _, _, err := ledger.VerifyFrom(ctx, schema(), d, nil); !errors.As(err, &ce) {
		t.Fatalf("verify with a tampered anchor: %v", err)
	}
}
