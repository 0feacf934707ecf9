package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/blobstore/localstore"
	"github.com/agentkeys/agentkeys/internal/blobstore/s3store"
)

// TestOpenMailStore: --mail-store is a directory or s3://BUCKET with known
// parameters; anything else is refused with the form to use.
func TestOpenMailStore(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secretexample")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	ctx := context.Background()
	if st, err := openMailStore(ctx, t.TempDir()); err != nil {
		t.Fatal(err)
	} else if _, ok := st.(*localstore.Store); !ok {
		t.Fatalf("a directory opened %T", st)
	}
	if st, err := openMailStore(ctx, "s3://mail?endpoint=http://127.0.0.1:8333&path-style=true&region=eu-west-1"); err != nil {
		t.Fatal(err)
	} else if _, ok := st.(*s3store.Store); !ok {
		t.Fatalf("an s3 URL opened %T", st)
	}
	for _, bad := range []string{"s3://", "s3://b/path", "s3://user:pw@b", "s3://b?endpoint=ftp://x", "s3://b?endpoint=http://k:s@x", "s3://b?color=red", "s3://b?region=a&region=b"} {
		_, err := openMailStore(ctx, bad)
		if err == nil || !strings.Contains(err.Error(), "--mail-store") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o600)
	if _, err := openMailStore(ctx, filepath.Join(file, "sub")); err == nil {
		t.Error("a store under a file opened")
	}
}

// TestEdgeSecret: the server makes a 0600 secret when missing; the edge
// refuses a missing, short or group-readable one.
func TestEdgeSecret(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d", "edge.secret")
	if _, _, err := loadEdgeSecret(p, false); err == nil {
		t.Fatal("a missing secret was accepted")
	}
	s1, created, err := loadEdgeSecret(p, true)
	if err != nil || !created || len(s1) != 64 {
		t.Fatalf("made: %v %v %d", err, created, len(s1))
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("made with mode %v", fi.Mode().Perm())
	}
	if s2, created, err := loadEdgeSecret(p, true); err != nil || created || string(s2) != string(s1) {
		t.Fatalf("read again: %v %v", err, created)
	}
	os.Chmod(p, 0o640)
	if _, _, err := loadEdgeSecret(p, false); err == nil || !strings.Contains(err.Error(), "readable by other users") {
		t.Fatalf("group-readable: %v", err)
	}
	os.WriteFile(p, []byte("short"), 0o600)
	os.Chmod(p, 0o600)
	if _, _, err := loadEdgeSecret(p, false); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("short: %v", err)
	}
}
