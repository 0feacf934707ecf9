package ledgerstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/ledgerstore"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
)

// TestParseRefuses: a value that names no supported store is refused before
// anything is opened, with the supported schemes in the message and never the
// value's password.
func TestParseRefuses(t *testing.T) {
	for _, raw := range []string{
		"mysql://root:hunter2-secret@localhost/x",
		"agentkeys:hunter2-secret@db.example/ledger",
		"/var/lib/agentkeys/ledger.db",
		"sqlite://",
		"",
		"u:hunter2-secret@x://y",
	} {
		_, err := ledgerstore.Parse(raw)
		if err == nil {
			t.Errorf("%q: accepted", raw)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "hunter2") {
			t.Errorf("%q: the error shows the password: %s", raw, msg)
		}
		if !strings.Contains(msg, "sqlite (sqlite:///") || !strings.Contains(msg, "postgres (postgres://") {
			t.Errorf("%q: the error does not name the supported schemes: %s", raw, msg)
		}
	}
	if _, err := ledgerstore.Parse("mysql://u:p@h/db"); err == nil || !strings.Contains(err.Error(), `scheme "mysql" is not supported`) {
		t.Errorf("unknown scheme: %v", err)
	}
}

// TestSQLite: sqlite://PATH opens that file (absolute or relative), read-write
// and then read-only, and String never shows a password.
func TestSQLite(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, raw := range []string{ledgerstore.SQLite(filepath.Join(dir, "abs.db")), "sqlite://rel.db"} {
		src, err := ledgerstore.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if src.String() != raw {
			t.Errorf("String() = %q, want %q", src.String(), raw)
		}
		writeThenReadOnly(t, src, raw)
	}
	if _, err := os.Stat(filepath.Join(dir, "rel.db")); err != nil {
		t.Fatalf("sqlite://rel.db is not a file relative to the working directory: %v", err)
	}
	for _, raw := range []string{"postgres://u:hunter2@h/db", "postgres://u@h/db?password=hunter2", "postgres://u@h/db?sslmode=require&sslpassword=hunter2"} {
		if got := ledgerstore.Redact(raw); strings.Contains(got, "hunter2") {
			t.Errorf("Redact kept the password: %s", got)
		}
		if src, err := ledgerstore.Parse(raw); err != nil || !src.HasPassword() {
			t.Errorf("%s: HasPassword false (%v)", ledgerstore.Redact(raw), err)
		}
	}
	for _, raw := range []string{"postgres://u@h/db?sslmode=require", "postgres:///db?host=/run/postgresql", "sqlite:///a:b@c.db"} {
		if src, err := ledgerstore.Parse(raw); err != nil || src.HasPassword() {
			t.Errorf("%s: HasPassword true (%v)", raw, err)
		}
	}
	var zero ledgerstore.Source
	if _, err := zero.Open(); err == nil {
		t.Error("a zero Source opened something")
	}
}

// TestPostgres: postgres:// and postgresql:// URLs open a PostgreSQL database,
// read-write and then read-only; an unreachable one is ledger.ErrUnreachable,
// named by its URL without the password.
func TestPostgres(t *testing.T) {
	c := pgtest.Start(t)
	for _, scheme := range []string{"postgres", "postgresql"} {
		raw := scheme + strings.TrimPrefix(c.NewDatabase(t), "postgres")
		src, err := ledgerstore.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(src.String(), c.Password()) || !strings.HasPrefix(src.String(), scheme+"://") {
			t.Errorf("String() = %q: shows the password, or not the scheme", src.String())
		}
		writeThenReadOnly(t, src, scheme)
	}
	src, err := ledgerstore.Parse("postgres://agentkeys:hunter2-secret@/ledger?host=" + filepath.Join(t.TempDir(), "none"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Open()
	if !errors.Is(err, ledger.ErrUnreachable) || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "postgres://agentkeys:xxxxx@/ledger") {
		t.Fatalf("unreachable store: %v; want ErrUnreachable naming the URL without its password", err)
	}
}

// TestOpenFailsWithNil: a store that fails to open is a nil ledger.Driver, not
// a nil pointer of the driver's type (which a caller's Close would dereference).
func TestOpenFailsWithNil(t *testing.T) {
	dir := t.TempDir()
	for _, raw := range []string{ledgerstore.SQLite(filepath.Join(dir, "missing.db")), "postgres://u@/db?host=" + filepath.Join(dir, "none")} {
		src, err := ledgerstore.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if d, err := src.OpenReadOnly(); err == nil || d != nil {
			t.Errorf("%s: got %#v, %v; want a nil Driver and an error", raw, d, err)
		}
	}
}

// writeThenReadOnly commits one entry through src, reopens it read-only, and
// checks the head is that entry and a commit is refused.
func writeThenReadOnly(t *testing.T, src ledgerstore.Source, name string) {
	t.Helper()
	d, err := src.Open()
	if err != nil {
		t.Fatal(err)
	}
	e := ledger.Entry{Kind: "k", Origin: ledger.OriginEnclave, Payload: []byte(`{}`), Signer: "s", Sig: []byte{1}}
	if err := d.Commit(context.Background(), []ledger.Entry{e}, nil); err != nil {
		t.Fatal(err)
	}
	d.Close()
	ro, err := src.OpenReadOnly()
	if err != nil {
		t.Fatal(err)
	}
	if h, ok, err := ro.Head(context.Background()); err != nil || !ok || h.Hash != e.Hash() {
		t.Fatalf("%s: head %v %v %v after reopening", name, h, ok, err)
	}
	if err := ro.Commit(context.Background(), []ledger.Entry{e}, nil); err == nil {
		t.Fatalf("%s: read-only store accepted a commit", name)
	}
	ro.Close()
}
