package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestLedgerURL: `server --ledger URL` keeps the ledger where the URL says, and a
// restart on the same URL continues the same chain; a URL of an unsupported
// store is refused before anything is created, naming the supported schemes and
// never the URL's password.
func TestLedgerURL(t *testing.T) {
	h := newHarness(t)
	t.Run("unsupported", func(t *testing.T) {
		home := t.TempDir()
		secret := "pw-" + randomHex(16)
		h.plant("password in --ledger", secret)
		s := h.spawn(serverOpts{home: home, args: []string{"--ledger", "mysql://agentkeys:" + secret + "@127.0.0.1:3306/ledger"}})
		if code := s.waitExit(startTimeout); code != 2 {
			t.Fatalf("exit %d, want 2 (usage); stderr %q", code, s.stderr.String())
		}
		if out := s.stderr.String(); !strings.Contains(out, `scheme "mysql" is not supported`) || !strings.Contains(out, "sqlite (sqlite://") || !strings.Contains(out, "postgres (postgres://") {
			t.Errorf("refusal does not name the scheme and the supported ones: %q", out)
		}
		if es, _ := os.ReadDir(home); len(es) != 0 {
			t.Errorf("a refused start created %v in AGENTKEYS_HOME", es)
		}
	})
	t.Run("sqlite elsewhere", func(t *testing.T) {
		home, elsewhere := t.TempDir(), t.TempDir()
		o := serverOpts{home: home, args: []string{"--ledger", "sqlite://" + filepath.Join(elsewhere, "chain.db")}}
		s := h.start(o)
		first := s.head()
		if code := s.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("stop: exit %d", code)
		}
		if _, err := os.Stat(filepath.Join(o.effectiveDataDir(), "ledger.db")); err == nil {
			t.Error("the ledger was written to the data dir, not to --ledger")
		}
		if _, err := os.Stat(filepath.Join(elsewhere, "chain.db")); err != nil {
			t.Fatalf("no ledger at --ledger's path: %v", err)
		}
		s = h.start(o)
		if hd := s.head(); hd.Seq < first.Seq {
			t.Fatalf("after restart head seq %d, before %d: not the same chain", hd.Seq, first.Seq)
		}
		es := s.allEntries()
		if len(es) == 0 || es[first.Seq].Hash() != first.Hash {
			t.Fatal("after restart the chain does not hold the first start's head")
		}
	})
}
