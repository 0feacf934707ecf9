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

// TestRelayAuthFlags: --relay-user takes its password from a file only its
// owner may read, or from the environment, never both and never alone; a
// password without a user or a user without a relay is refused.
func TestRelayAuthFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "relay.pass")
	os.WriteFile(file, []byte("s3cret\n"), 0o600)
	open := filepath.Join(dir, "open.pass")
	os.WriteFile(open, []byte("s3cret\n"), 0o644)
	empty := filepath.Join(dir, "empty.pass")
	os.WriteFile(empty, []byte("\n"), 0o600)
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == relayPasswordEnv {
				return v
			}
			return ""
		}
	}
	for name, tc := range map[string]struct {
		f    mailFlags
		env  string
		want string // in the error; "" = accepted
	}{
		"file":             {mailFlags{relay: "smtp.example.net:587", relayUser: "u", relayPasswordFile: file}, "", ""},
		"environment":      {mailFlags{relay: "smtp.example.net:587", relayUser: "u"}, "s3cret", ""},
		"no auth":          {mailFlags{relay: "smtp.example.net:587"}, "", ""},
		"open file":        {mailFlags{relay: "smtp.example.net:587", relayUser: "u", relayPasswordFile: open}, "", "open to other users"},
		"missing file":     {mailFlags{relay: "smtp.example.net:587", relayUser: "u", relayPasswordFile: filepath.Join(dir, "none")}, "", "cannot read"},
		"empty password":   {mailFlags{relay: "smtp.example.net:587", relayUser: "u", relayPasswordFile: empty}, "", "empty"},
		"both":             {mailFlags{relay: "smtp.example.net:587", relayUser: "u", relayPasswordFile: file}, "s3cret", "given twice"},
		"no password":      {mailFlags{relay: "smtp.example.net:587", relayUser: "u"}, "", "needs its password"},
		"password no user": {mailFlags{relay: "smtp.example.net:587"}, "s3cret", "needs --relay-user"},
		"user no relay":    {mailFlags{relayUser: "u"}, "s3cret", "needs --relay"},
	} {
		f := tc.f
		f.ipRate, f.rcptRate, f.senderRate, f.maxSize = "1/1m", "1/1m", "1/1m", 1<<20
		err := f.check(env(tc.env))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", name, err)
		case tc.want == "" && f.relayUser != "" && (f.relayAuth == nil || f.relayAuth.Password != "s3cret" || f.relayAuth.User != "u"):
			t.Errorf("%s: credentials %+v", name, f.relayAuth)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error naming %q", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error shows the password: %v", name, err)
		}
	}
}
