package ledgerstore_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/ledgerstore"
)

// TestParseRefuses: a value that names no supported store is refused before
// anything is opened, with the supported schemes in the message and never the
// value's password.
func TestParseRefuses(t *testing.T) {
	for _, raw := range []string{
		"postgres://agentkeys:hunter2-secret@db.example:5432/ledger",
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
		if !strings.Contains(msg, "supported: sqlite (sqlite:///") {
			t.Errorf("%q: the error does not name the supported schemes: %s", raw, msg)
		}
	}
	if _, err := ledgerstore.Parse("postgres://u:p@h/db"); err == nil || !strings.Contains(err.Error(), `scheme "postgres" is not supported`) {
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
			t.Fatalf("%s: head %v %v %v after reopening", raw, h, ok, err)
		}
		if err := ro.Commit(context.Background(), []ledger.Entry{e}, nil); err == nil {
			t.Fatalf("%s: read-only store accepted a commit", raw)
		}
		ro.Close()
	}
	if _, err := os.Stat(filepath.Join(dir, "rel.db")); err != nil {
		t.Fatalf("sqlite://rel.db is not a file relative to the working directory: %v", err)
	}
	if got := ledgerstore.Redact("postgres://u:hunter2@h/db"); strings.Contains(got, "hunter2") {
		t.Errorf("Redact kept the password: %s", got)
	}
	var zero ledgerstore.Source
	if _, err := zero.Open(); err == nil {
		t.Error("a zero Source opened something")
	}
}
