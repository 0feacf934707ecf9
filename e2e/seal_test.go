package e2e

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// copyTree copies the regular files and directories under src to dst (which
// must not exist), keeping their modes: what a backup or an insider would take.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Mkdir(to, fi.Mode().Perm())
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("copying %s: %v", src, err)
	}
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestDataDirCopyOpensNothing: the platform key lives outside the data dir, so
// a copy of the data dir alone (a backup, an insider) starts no broker and
// derives no key — neither normally nor with --dev — and creates nothing. With
// the platform key beside it, the same copy opens the same enclave.
func TestDataDirCopyOpensNothing(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	o := serverOpts{home: home}
	s := h.start(o)
	keys := fmt.Sprint(s.enclaveInfo().Keys)
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	// The copy, on a machine (home) that does not hold the platform key.
	thief := t.TempDir()
	cp := serverOpts{home: thief}
	copyTree(t, o.effectiveDataDir(), cp.effectiveDataDir())
	seed := fileBytes(t, filepath.Join(cp.effectiveDataDir(), "seed.sealed"))
	for _, args := range [][]string{nil, {"--dev"}} {
		cp.args = args
		line := refused(t, h, cp)
		for _, want := range []string{"platform key", "seed.sealed", "restore"} {
			if !strings.Contains(line, want) {
				t.Errorf("%v: refusal does not mention %q: %s", args, want, line)
			}
		}
		if exists(filepath.Join(thief, "platform.key")) || exists(filepath.Join(cp.effectiveDataDir(), "platform.key")) {
			t.Fatalf("%v: the refused start created a platform key", args)
		}
		if !bytes.Equal(seed, fileBytes(t, filepath.Join(cp.effectiveDataDir(), "seed.sealed"))) {
			t.Fatalf("%v: seed.sealed changed after the refused start", args)
		}
	}
	// A wrong platform key of the thief's own opens nothing either.
	other := filepath.Join(thief, "platform.key")
	wrong := randomHex(32)
	h.plant("the thief's platform key", wrong)
	if err := os.WriteFile(other, []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cp.args = nil
	if line := refused(t, h, cp); !strings.Contains(line, "wrong platform key") {
		t.Errorf("a wrong platform key is not named as such: %s", line)
	}

	pk := filepath.Join(home, "platform.key")
	if m := fileMode(t, pk); m != 0o600 {
		t.Errorf("%s mode %o, want 600", pk, m)
	}
	if exists(filepath.Join(o.effectiveDataDir(), "platform.key")) {
		t.Error("the default layout put platform.key in the data dir")
	}
	h.plant("platform.key contents", strings.TrimSpace(string(fileBytes(t, pk))))

	// Control: the copy is complete — with the real platform key it opens.
	cp.args = []string{"--platform-key", pk}
	s = h.start(cp)
	if got := fmt.Sprint(s.enclaveInfo().Keys); got != keys {
		t.Errorf("the copy with its platform key serves other keys:\n%s\n%s", got, keys)
	}
}

// TestPlatformKeyInDataDir: a platform key inside the data dir is refused
// unless --dev, with the fix named; an install of the old layout (platform.key
// in the data dir) is told the exact command that moves it, and after the move
// serves the same keys.
func TestPlatformKeyInDataDir(t *testing.T) {
	t.Run("configured inside", func(t *testing.T) {
		h := newHarness(t)
		o := serverOpts{home: t.TempDir()}
		inside := filepath.Join(o.effectiveDataDir(), "keys", "platform.key")
		o.args = []string{"--platform-key", inside}
		line := refused(t, h, o)
		for _, want := range []string{"inside the data directory", "--platform-key", "--dev"} {
			if !strings.Contains(line, want) {
				t.Errorf("refusal does not mention %q: %s", want, line)
			}
		}
		if exists(inside) || exists(filepath.Join(o.effectiveDataDir(), "seed.sealed")) {
			t.Error("the refused start created a platform key or a seed")
		}
		o.args = append(o.args, "--dev")
		s := h.start(o)
		if m := fileMode(t, inside); m != 0o600 {
			t.Errorf("platform key mode %o, want 600", m)
		}
		if m := fileMode(t, filepath.Dir(inside)); m != 0o700 {
			t.Errorf("platform key dir mode %o, want 700", m)
		}
		s.stop(syscall.SIGTERM)
	})

	t.Run("old layout", func(t *testing.T) {
		h := newHarness(t)
		home := t.TempDir()
		dir := filepath.Join(home, "server")
		legacy := filepath.Join(dir, "platform.key")
		// The layout of earlier releases: platform.key in the data dir.
		old := serverOpts{home: home, args: []string{"--dev", "--platform-key", legacy}}
		s := h.start(old)
		keys := fmt.Sprint(s.enclaveInfo().Keys)
		s.stop(syscall.SIGTERM)
		h.plant("platform.key contents", strings.TrimSpace(string(fileBytes(t, legacy))))
		seed := fileBytes(t, filepath.Join(dir, "seed.sealed"))

		o := serverOpts{home: home}
		line := refused(t, h, o)
		want := fmt.Sprintf("mv '%s' '%s'", legacy, filepath.Join(home, "platform.key"))
		if !strings.Contains(line, want) {
			t.Errorf("refusal does not give the command %q: %s", want, line)
		}
		if !bytes.Equal(seed, fileBytes(t, filepath.Join(dir, "seed.sealed"))) || !exists(legacy) || exists(filepath.Join(home, "platform.key")) {
			t.Fatal("the refused start changed the seed or a platform key file")
		}

		// A copy instead of a move leaves the key in the data dir: still refused.
		if err := os.WriteFile(filepath.Join(home, "platform.key"), fileBytes(t, legacy), 0o600); err != nil {
			t.Fatal(err)
		}
		line = refused(t, h, o)
		if want := fmt.Sprintf("rm '%s'", legacy); !strings.Contains(line, want) {
			t.Errorf("refusal with both files does not give %q: %s", want, line)
		}
		if err := os.Remove(filepath.Join(home, "platform.key")); err != nil {
			t.Fatal(err)
		}

		// The command the refusal gave, then the same enclave.
		if err := os.Rename(legacy, filepath.Join(home, "platform.key")); err != nil {
			t.Fatal(err)
		}
		s = h.start(o)
		if got := fmt.Sprint(s.enclaveInfo().Keys); got != keys {
			t.Errorf("after the move the keys differ:\n%s\n%s", got, keys)
		}
		s.stop(syscall.SIGTERM)
		h.auditOK(home, "--data-dir", dir)
	})
}

// TestPlatformKeyFlagAndEnv: --platform-key and AGENTKEYS_PLATFORM_KEY together
// are ambiguous: refused before anything is created, naming both.
func TestPlatformKeyFlagAndEnv(t *testing.T) {
	h := newHarness(t)
	k := randomHex(32)
	h.plant("AGENTKEYS_PLATFORM_KEY", k)
	o := serverOpts{home: t.TempDir(), platformKey: k}
	o.args = []string{"--platform-key", filepath.Join(o.home, "elsewhere.key")}
	s := h.spawn(o)
	if code := s.waitExit(startTimeout); code == 0 {
		t.Fatal("the server started with both --platform-key and AGENTKEYS_PLATFORM_KEY")
	}
	out := s.stderr.String()
	for _, want := range []string{"BAD_REQUEST", "--platform-key", "AGENTKEYS_PLATFORM_KEY", "Fix:"} {
		if !strings.Contains(out, want) {
			t.Errorf("refusal does not mention %q: %s", want, out)
		}
	}
	if exists(o.effectiveDataDir()) || exists(o.platformKeyFile()) {
		t.Error("the refused start created the data dir or a platform key")
	}
}
