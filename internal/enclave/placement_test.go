package enclave

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// copyDataDir copies the files of dir into a new directory, as a backup or an
// insider would, and returns it.
func copyDataDir(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range dirListing(t, dir) {
		if err := os.WriteFile(filepath.Join(dst, name), readFile(t, filepath.Join(dir, name)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestDataDirCopyOpensNothing: a copy of the data directory alone, on a host
// without the platform key, opens no enclave — with or without the dev
// allowance — creates no platform key, and leaves the copy untouched.
func TestDataDirCopyOpensNothing(t *testing.T) {
	cfg := testConfig(t)
	e := mustOpen(t, cfg)
	keys := e.Keys()
	e.Close()

	thief := cfg
	thief.Dir = copyDataDir(t, cfg.Dir)
	thief.PlatformKeyFile = filepath.Join(t.TempDir(), "platform.key")
	for _, dev := range []bool{false, true} {
		thief.DevPlatformKeyInDir = dev
		err := expectOpenError(t, thief, ErrPlatformKeyMissing)
		if !strings.Contains(err.Error(), "restore") {
			t.Errorf("dev=%v: error does not name the fix: %v", dev, err)
		}
		if _, err := os.Stat(thief.PlatformKeyFile); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("dev=%v: a platform key was created for the copy", dev)
		}
	}
	// No platform key configured at all: refused too, not defaulted into Dir.
	none := thief
	none.PlatformKeyFile = ""
	expectOpenError(t, none, ErrPlatformKeyMissing)

	// Control: the copy with the platform key opens the same enclave.
	thief.DevPlatformKeyInDir = false
	thief.PlatformKeyFile = cfg.PlatformKeyFile
	if got := mustOpen(t, thief).Keys(); !slices.Equal(got, keys) {
		t.Fatal("the copy with its platform key serves other keys")
	}
}

// TestPlatformKeyInsideDirRefused: a configured platform key file inside the
// data directory (directly, below it, or through a symbolic link) is refused
// before anything is created, unless DevPlatformKeyInDir.
func TestPlatformKeyInsideDirRefused(t *testing.T) {
	cfg := testConfig(t)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(cfg.Dir, link); err != nil {
		t.Fatal(err)
	}
	for _, pk := range []string{
		filepath.Join(cfg.Dir, "platform.key"),
		filepath.Join(cfg.Dir, "keys", "platform.key"),
		filepath.Join(cfg.Dir, "sub", "..", "platform.key"),
		filepath.Join(link, "keys", "platform.key"),
	} {
		c := cfg
		c.PlatformKeyFile = pk
		e, err := Open(c)
		if err == nil {
			e.Close()
			t.Fatalf("%s: Open accepted a platform key inside the data directory", pk)
		}
		if !errors.Is(err, ErrPlatformKeyInDataDir) {
			t.Fatalf("%s: error %v, want ErrPlatformKeyInDataDir", pk, err)
		}
		for _, w := range []string{"--platform-key", "--dev", "copy of the data directory"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error does not mention %q: %v", pk, w, err)
			}
		}
		if got := dirListing(t, cfg.Dir); len(got) != 0 {
			t.Fatalf("%s: the refused Open created %v", pk, got)
		}
	}
	// Beside the data directory is fine, and so is a name that only starts
	// like it.
	c := cfg
	c.PlatformKeyFile = cfg.Dir + "-keys/platform.key"
	mustOpen(t, c).Close()
	checkMode(t, c.PlatformKeyFile, 0o600)
	checkMode(t, filepath.Dir(c.PlatformKeyFile), 0o700|os.ModeDir)

	// With the dev allowance, inside works (the layout of earlier releases).
	d := testConfig(t)
	d.PlatformKeyFile = filepath.Join(d.Dir, "keys", "platform.key")
	d.DevPlatformKeyInDir = true
	mustOpen(t, d).Close()
	checkMode(t, d.PlatformKeyFile, 0o600)
	checkMode(t, filepath.Dir(d.PlatformKeyFile), 0o700|os.ModeDir)
}

// TestLegacyPlatformKeyRefused: an install of the old layout (platform.key in
// the data directory) is refused with the exact command that moves the key
// out; nothing is moved or lost, and after the move the same enclave opens.
func TestLegacyPlatformKeyRefused(t *testing.T) {
	old := testConfig(t)
	outside := old.PlatformKeyFile
	old.PlatformKeyFile = filepath.Join(old.Dir, platformKeyName)
	old.DevPlatformKeyInDir = true
	e := mustOpen(t, old)
	keys := e.Keys()
	e.Close()
	legacy := old.PlatformKeyFile

	cfg := old
	cfg.DevPlatformKeyInDir = false
	cfg.PlatformKeyFile = outside
	err := expectOpenError(t, cfg, ErrPlatformKeyInDataDir)
	if want := fmt.Sprintf("mv '%s' '%s'", legacy, outside); !strings.Contains(err.Error(), want) {
		t.Errorf("error does not give %q: %v", want, err)
	}
	if _, err := os.Stat(outside); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("the refused Open created the platform key outside")
	}

	// A target in a directory that does not exist yet: the command makes it.
	far := cfg
	far.PlatformKeyFile = filepath.Join(t.TempDir(), "new", "platform.key")
	err = expectOpenError(t, far, ErrPlatformKeyInDataDir)
	if want := fmt.Sprintf("mkdir -p -m 700 '%s' && mv '%s' '%s'", filepath.Dir(far.PlatformKeyFile), legacy, far.PlatformKeyFile); !strings.Contains(err.Error(), want) {
		t.Errorf("error does not give %q: %v", want, err)
	}

	// The key in the environment does not excuse a copy left in the data dir.
	env := cfg
	env.PlatformKeyHex = strings.TrimSpace(string(readFile(t, legacy)))
	expectOpenError(t, env, ErrPlatformKeyInDataDir)

	// Copied instead of moved: still refused, told to remove the copy.
	if err := os.WriteFile(outside, readFile(t, legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	err = expectOpenError(t, cfg, ErrPlatformKeyInDataDir)
	if want := fmt.Sprintf("cmp '%s' '%s' && rm '%s'", legacy, outside, legacy); !strings.Contains(err.Error(), want) {
		t.Errorf("error does not give %q: %v", want, err)
	}
	if err := os.Remove(outside); err != nil {
		t.Fatal(err)
	}

	// The dev allowance alone does not find the key elsewhere, but names it.
	dev := cfg
	dev.DevPlatformKeyInDir = true
	err = expectOpenError(t, dev, ErrPlatformKeyMissing)
	if want := fmt.Sprintf("mv '%s' '%s'", legacy, outside); !strings.Contains(err.Error(), want) {
		t.Errorf("error does not give %q: %v", want, err)
	}

	// Do what the error said.
	if err := os.Rename(legacy, outside); err != nil {
		t.Fatal(err)
	}
	if got := mustOpen(t, cfg).Keys(); !slices.Equal(got, keys) {
		t.Fatal("after the move the enclave serves other keys")
	}
}

// TestPlatformKeyExposed: a platform key file other users may read or write is
// refused, naming the chmod that fixes it.
func TestPlatformKeyExposed(t *testing.T) {
	cfg := testConfig(t)
	mustOpen(t, cfg).Close()
	for _, mode := range []os.FileMode{0o640, 0o604, 0o620} {
		if err := os.Chmod(cfg.PlatformKeyFile, mode); err != nil {
			t.Fatal(err)
		}
		err := expectOpenError(t, cfg, ErrPlatformKeyExposed)
		if want := "chmod 600 '" + cfg.PlatformKeyFile + "'"; !strings.Contains(err.Error(), want) {
			t.Errorf("mode %o: error does not give %q: %v", mode, want, err)
		}
	}
	if err := os.Chmod(cfg.PlatformKeyFile, 0o400); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, cfg)
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/a/b":       "'/a/b'",
		"/a b/c":     "'/a b/c'",
		"/it's/key":  `'/it'\''s/key'`,
		"/$HOME/`x`": "'/$HOME/`x`'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestNoPlaintextSurface: no method of *Enclave hands a decrypted credential
// to its caller; credentials leave only re-encrypted (Reseal,
// ResealToSession) and CheckSealed answers only yes or no.
func TestNoPlaintextSurface(t *testing.T) {
	typ := reflect.TypeFor[*Enclave]()
	for _, name := range []string{"Decrypt", "Open", "Unseal", "Plaintext"} {
		if _, ok := typ.MethodByName(name); ok {
			t.Errorf("*Enclave has a method %s", name)
		}
	}
	m, _ := typ.MethodByName("CheckSealed")
	if m.Type.NumOut() != 1 || m.Type.Out(0) != reflect.TypeFor[error]() {
		t.Errorf("CheckSealed returns %v, want only an error", m.Type)
	}
}
