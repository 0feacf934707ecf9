package pgtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func install(t *testing.T, dir string, bins ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range bins {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBinDir: initdb on PATH wins (through its symlink, to where postgres is);
// otherwise the newest complete version under the distribution's root, by number
// (15 before 9); nothing found names the install command.
func TestBinDir(t *testing.T) {
	root := t.TempDir()
	install(t, filepath.Join(root, "9", "bin"), "initdb", "postgres")
	install(t, filepath.Join(root, "13", "bin"), "initdb", "postgres")
	install(t, filepath.Join(root, "15", "bin"), "initdb", "postgres")
	install(t, filepath.Join(root, "16", "bin"), "initdb") // no server binary: skipped
	notOnPath := func(string) (string, error) { return "", errors.New("not found") }
	if got, err := binDir(notOnPath, root); err != nil || got != filepath.Join(root, "15", "bin") {
		t.Errorf("binDir = %q, %v; want version 15", got, err)
	}
	link := filepath.Join(t.TempDir(), "initdb")
	if err := os.Symlink(filepath.Join(root, "13", "bin", "initdb"), link); err != nil {
		t.Fatal(err)
	}
	onPath := func(string) (string, error) { return link, nil }
	if got, err := binDir(onPath, root); err != nil || got != filepath.Join(root, "13", "bin") {
		t.Errorf("binDir with initdb on PATH = %q, %v; want the symlink's target dir", got, err)
	}
	if _, err := binDir(notOnPath, t.TempDir()); err == nil || !strings.Contains(err.Error(), "apt-get install postgresql") {
		t.Errorf("nothing installed: %v", err)
	}
}

// recorder is a testing.TB that records Fatalf and Skipf.
type recorder struct {
	testing.TB
	fatal, skip bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Fatalf(string, ...any) { r.fatal = true }
func (r *recorder) Skipf(string, ...any)  { r.skip = true }

// TestMissing: without PostgreSQL a test fails in CI and is skipped elsewhere.
func TestMissing(t *testing.T) {
	for _, ci := range []bool{true, false} {
		r := &recorder{TB: t}
		missing(r, errors.New("not installed"), ci)
		if r.fatal != ci || r.skip == ci {
			t.Errorf("CI=%v: fatal=%v skip=%v", ci, r.fatal, r.skip)
		}
	}
}

// TestKillRestart: a row committed before kill -9 of the whole server is there
// after Restart on the same data dir; while it is down, connections fail.
func TestKillRestart(t *testing.T) {
	c := Start(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE t (v text)")
	c.Exec(t, db, "INSERT INTO t VALUES ('committed')")
	c.Kill(t)
	ctx := context.Background()
	if conn, err := pgx.Connect(ctx, db); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a killed server")
	}
	c.Restart(t)
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != "committed" {
		t.Fatalf("after kill -9 and restart: %q, %v; want the committed row", v, err)
	}
}
