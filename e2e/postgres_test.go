package e2e

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
)

// withoutPassword is raw with the password dropped from its user info.
func withoutPassword(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(u.User.Username())
	return u.String()
}

// TestPostgresLedger runs the real binary on a throwaway PostgreSQL cluster:
// `server --ledger postgres://…` (the password in PGPASSWORD) stores and reads a
// credential, keeps them across a restart, and `audit verify --ledger` and
// `--server` pass; a database that cannot be reached, or refuses the password,
// exits 5 naming the URL, having created nothing; a password in argv is
// refused. No output ever shows the password.
func TestPostgresLedger(t *testing.T) {
	c := pgtest.Start(t)
	h := newHarness(t)
	h.plant("PostgreSQL password", c.Password())
	t.Setenv("PGPASSWORD", c.Password()) // inherited by every process this test starts

	t.Run("store, read, restart, audit", func(t *testing.T) {
		ledgerURL := withoutPassword(t, c.NewDatabase(t))
		o := serverOpts{home: t.TempDir(), args: []string{"--ledger", ledgerURL}}
		s := h.start(o)
		h.plantServer(o)
		oh := h.owner(s)
		secret := "sk-pg-" + randomHex(16)
		svc := "svc-" + randomHex(4)
		h.mustOK(h.cliIn(oh, secret+"\n", false, "store", svc), "store")
		if r := h.mustOK(h.cliIn(oh, "", true, "read", svc), "read"); strings.TrimSpace(r.stdout) != secret {
			t.Fatal("read did not return the stored credential")
		}
		before := s.head()
		if code := s.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("stop: exit %d", code)
		}
		if _, err := os.Stat(filepath.Join(o.effectiveDataDir(), "ledger.db")); err == nil {
			t.Error("a SQLite ledger was written to the data dir, not to PostgreSQL")
		}
		t.Log(h.auditOK(o.home, "--ledger", ledgerURL)) // offline, while no server runs
		o.args = append(o.args, "--listen", s.addr)     // the same issuer: the owner's session stays valid
		s = h.start(o)
		if hd := s.head(); hd.Seq < before.Seq {
			t.Fatalf("after restart head seq %d, before %d: not the same chain", hd.Seq, before.Seq)
		}
		if es := s.allEntries(); len(es) <= int(before.Seq) || es[before.Seq].Hash() != before.Hash {
			t.Fatal("after restart the chain does not hold the first start's head")
		}
		if r := h.mustOK(h.cliIn(oh, "", true, "read", svc), "read after restart"); strings.TrimSpace(r.stdout) != secret {
			t.Fatal("after restart read did not return the stored credential")
		}
		t.Log(h.auditOK(o.home, "--ledger", ledgerURL)) // read-only, beside the running server
		t.Log(h.auditOK(o.home, "--server", s.url))
	})

	t.Run("unreachable", func(t *testing.T) {
		nowhere := "postgres://agentkeys@/ledger?host=" + filepath.Join(t.TempDir(), "no-server")
		wrongPassword := "wrong-" + randomHex(16)
		h.plant("wrong PostgreSQL password", wrongPassword)
		for name, tc := range map[string]struct{ url, password string }{
			"no server":      {nowhere, c.Password()},
			"wrong password": {withoutPassword(t, c.NewDatabase(t)), wrongPassword},
		} {
			t.Setenv("PGPASSWORD", tc.password)
			o := serverOpts{home: t.TempDir(), args: []string{"--ledger", tc.url}}
			s := h.spawn(o)
			if code := s.waitExit(startTimeout); code != 5 {
				t.Fatalf("%s: exit %d, want 5; stderr %q", name, code, s.stderr.String())
			}
			out := s.stderr.String()
			if !strings.Contains(out, "UNREACHABLE") || !strings.Contains(out, "ledger store "+tc.url) || !strings.Contains(out, "Fix:") {
				t.Errorf("%s: the refusal does not say UNREACHABLE, name the URL and the fix: %q", name, out)
			}
			if _, err := os.Stat(filepath.Join(o.effectiveDataDir(), "seed.sealed")); err == nil {
				t.Errorf("%s: the refused start created a seed", name)
			}
			if r := h.cli(o.home, "audit", "verify", "--ledger", tc.url); r.code != 5 || !strings.Contains(r.stderr, "UNREACHABLE") {
				t.Errorf("%s: audit verify --ledger: exit %d, stderr %q; want 5 UNREACHABLE", name, r.code, r.stderr)
			}
		}
	})

	t.Run("password in argv", func(t *testing.T) {
		inArgv := "argv-" + randomHex(16)
		h.plant("password given in argv", inArgv)
		raw := "postgres://agentkeys:" + inArgv + "@/ledger?host=" + c.Dir()
		home := t.TempDir()
		s := h.spawn(serverOpts{home: home, args: []string{"--ledger", raw}})
		if code := s.waitExit(startTimeout); code != 2 {
			t.Fatalf("exit %d, want 2; stderr %q", code, s.stderr.String())
		}
		if out := s.stderr.String(); !strings.Contains(out, "carries a password") || !strings.Contains(out, "PGPASSWORD") {
			t.Errorf("the refusal does not name the problem and the fix: %q", out)
		}
		if es, _ := os.ReadDir(home); len(es) != 0 {
			t.Errorf("a refused start created %v in AGENTKEYS_HOME", es)
		}
		if r := h.cli(home, "audit", "verify", "--ledger", raw+"&password="+inArgv); r.code != 2 || !strings.Contains(r.stderr, "carries a password") {
			t.Errorf("audit verify --ledger with a password: exit %d, stderr %q; want 2", r.code, r.stderr)
		}
		if r := h.cli(home, "audit", "verify", "--ledger", withoutPassword(t, raw), "--data-dir", home); r.code != 2 || !strings.Contains(r.stderr, "exactly one of") {
			t.Errorf("audit verify --ledger with --data-dir: exit %d, stderr %q; want 2", r.code, r.stderr)
		}
	})
}
