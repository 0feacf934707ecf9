package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// entries lists the names in dir, to show no temporary file is left behind.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func checkFile(t *testing.T, path, want string, mode fs.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Fatalf("%s holds %q, want %q", path, b, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != mode {
		t.Fatalf("%s has mode %#o, want %#o", path, fi.Mode().Perm(), mode)
	}
}

func TestWriteFileCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkFile(t, p, "one", 0o600)
	if err := WriteFile(p, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	checkFile(t, p, "two", 0o644)
	if names := entries(t, dir); len(names) != 1 || names[0] != "f" {
		t.Fatalf("directory holds %q, want only f", names)
	}
}

// TestModeIgnoresUmask: the mode asked for is the mode written, whether the
// umask would remove bits from it or not.
func TestModeIgnoresUmask(t *testing.T) {
	for _, umask := range []int{0o077, 0o022, 0o000} {
		old := syscall.Umask(umask)
		dir := t.TempDir()
		for i, mode := range []fs.FileMode{0o600, 0o644, 0o640, 0o400} {
			p := filepath.Join(dir, "w"+string(rune('a'+i)))
			if err := WriteFile(p, []byte("x"), mode); err != nil {
				t.Fatal(err)
			}
			checkFile(t, p, "x", mode)
			n := filepath.Join(dir, "n"+string(rune('a'+i)))
			if err := CreateNew(n, []byte("y"), mode); err != nil {
				t.Fatal(err)
			}
			checkFile(t, n, "y", mode)
		}
		syscall.Umask(old)
	}
}

// TestCrashBeforeRenameKeepsOldFile simulates a crash after the data is written
// but before it is moved into place: the old file is intact and no temporary
// file is left.
func TestCrashBeforeRenameKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("crashed before rename")
	var sawTemp string
	err := write(p, []byte("new, longer content"), 0o644, func(tmp, path string) error {
		b, err := os.ReadFile(tmp)
		if err != nil || string(b) != "new, longer content" {
			t.Fatalf("temporary file holds %q (%v) before the rename", b, err)
		}
		sawTemp = tmp
		return crash
	})
	if !errors.Is(err, crash) {
		t.Fatalf("write returned %v, want the commit's error", err)
	}
	if filepath.Dir(sawTemp) != dir {
		t.Fatalf("temporary file %s is not in the target's directory %s", sawTemp, dir)
	}
	checkFile(t, p, "old", 0o600)
	if names := entries(t, dir); len(names) != 1 {
		t.Fatalf("directory holds %q, want only state.json", names)
	}
}

func TestCreateNewRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := CreateNew(p, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkFile(t, p, "first", 0o600)
	err := CreateNew(p, []byte("second"), 0o644)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("CreateNew over an existing file returned %v, want fs.ErrExist", err)
	}
	checkFile(t, p, "first", 0o600)
	if names := entries(t, dir); len(names) != 1 {
		t.Fatalf("directory holds %q, want only key", names)
	}
}

// TestCreateNewRefusesSymlink: a dangling symlink at the target is an existing
// name too; nothing is written through it.
func TestCreateNewRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	elsewhere := filepath.Join(dir, "elsewhere")
	if err := os.Symlink(elsewhere, p); err != nil {
		t.Fatal(err)
	}
	if err := CreateNew(p, []byte("secret"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("CreateNew over a symlink returned %v, want fs.ErrExist", err)
	}
	if _, err := os.Lstat(elsewhere); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the symlink's target was written: %v", err)
	}
}

func TestMissingDirectory(t *testing.T) {
	p := filepath.Join(t.TempDir(), "no", "f")
	if err := WriteFile(p, []byte("x"), 0o600); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("WriteFile into a missing directory returned %v, want fs.ErrNotExist", err)
	}
	if err := CreateNew(p, []byte("x"), 0o600); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("CreateNew into a missing directory returned %v, want fs.ErrNotExist", err)
	}
}
