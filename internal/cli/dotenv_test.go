package cli

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// A problem keeps the error that caused it: a caller can ask errors.Is about the
// file, while the user sees the same one-line message as before.
func TestEnvFileProblemWrapsTheCause(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.env")
	_, err := (&env{}).readEnvFile(path, "--env-file")
	var p *problem.Error
	if !errors.As(err, &p) || p.Code != problem.BadRequest || p.Message != "cannot open "+path+": no such file or directory" {
		t.Fatalf("got %v", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false: the cause is lost", err)
	}
}

func TestServiceForEnv(t *testing.T) {
	for name, want := range map[string]string{
		"OPENAI_API_KEY": "openai", "GITHUB_TOKEN": "github-token", "API_KEY": "api-key", "_API_KEY": "-api-key",
		"Db_Url": "db-url", "X": "x",
	} {
		got := ServiceForEnv(name)
		if got != want {
			t.Errorf("ServiceForEnv(%s) = %s, want %s", name, got, want)
		}
		// run exports a service as EnvName: an imported *_API_KEY comes back under its name
		if apiv1.ValidName(got) && name == "OPENAI_API_KEY" && EnvName(got) != name {
			t.Errorf("EnvName(%s) = %s, not %s", got, EnvName(got), name)
		}
	}
}

func TestShellJoin(t *testing.T) {
	dir := t.TempDir()
	args := []string{"plain", "with space", "it's", "$HOME", "", "a/b-c:d=e"}
	out := filepath.Join(dir, "out")
	script := "printf '%s\\n' " + shellJoin(args) + " > " + shellJoin([]string{out})
	if err := exec.Command("sh", "-c", script).Run(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	want := ""
	for _, a := range args {
		want += a + "\n"
	}
	if string(b) != want {
		t.Fatalf("the shell saw %q, want %q", b, want)
	}
}
