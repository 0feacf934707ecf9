package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/porttest"
	"github.com/agentkeys/agentkeys/internal/seaweedtest"
)

// guideTimeout bounds the whole "Try it on your machine" run.
const guideTimeout = 5 * time.Minute

// TestGuideTryLocally runs the "Try it on your machine" section of the AWS guide
// as written, with the real agentkeys binary on PATH, the pinned SeaweedFS and
// the AWS CLI: the agent gets credentials through its daemon and reads and
// writes its own prefix only. Only what a parallel run could collide on is
// changed: the directory and the ports (the broker's, and SeaweedFS's: its
// S3 port and the others it would open at their defaults).
func TestGuideTryLocally(t *testing.T) {
	h := newHarness(t)
	if _, err := exec.LookPath("aws"); err != nil {
		t.Fatal("the AWS CLI (aws) is not installed: the guide uses it (scripts/test installs it)")
	}
	for _, tool := range []string{"jq", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: the guide uses it", tool)
		}
	}
	// scripts/seaweedfs (which the guide runs) finds the binary in its cache
	weed := weedBinary(t)
	version := regexp.MustCompile(`(?m)^VERSION="([^"]+)"`).FindStringSubmatch(string(fileBytes(t, "../scripts/seaweedfs")))
	if version == nil {
		t.Fatal("scripts/seaweedfs pins no VERSION")
	}
	cache := t.TempDir()
	if err := os.Symlink(weed, filepath.Join(cache, "weed-"+version[1])); err != nil {
		t.Fatal(err)
	}

	try := filepath.Join(t.TempDir(), "try")
	broker, s3 := porttest.Free(t), porttest.Free(t)
	weedPorts := fmt.Sprintf("-s3.port %d %s", s3, strings.Join(seaweedtest.Choose(t).Args, " "))
	script := strings.Join(docBlocks(t, "../docs/connect-your-aws-account.md", "## Try it on your machine", "sh"), "\n")
	for _, c := range [][2]string{{"/tmp/agentkeys-try", try}, {"127.0.0.1:8090", fmt.Sprintf("127.0.0.1:%d", broker)},
		{"-s3.port 8333", weedPorts}, {"127.0.0.1:8333", fmt.Sprintf("127.0.0.1:%d", s3)}} {
		if !strings.Contains(script, c[0]) {
			t.Fatalf("the guide no longer says %q", c[0])
		}
		script = strings.ReplaceAll(script, c[0], c[1])
	}

	ctx, cancel := context.WithTimeout(context.Background(), guideTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -eo pipefail\n"+script)
	cmd.Dir = ".." // the guide starts at the root of the checkout
	var env []string
	for _, kv := range childEnv() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"AGENTKEYS_TEST_CACHE="+cache, "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(cache, "no-credentials"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out := h.newOutput()
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // whatever the guide left running
	logs := func() string {
		var sb strings.Builder
		for _, f := range []string{"broker.log", "weed.log"} {
			b, _ := os.ReadFile(filepath.Join(try, f))
			fmt.Fprintf(&sb, "--- %s (tail)\n%s\n", f, tail(string(b), 30))
		}
		return sb.String()
	}
	if err != nil {
		t.Fatalf("the guide's commands failed: %v\n%s\n%s", err, out.String(), logs())
	}
	text := out.String()
	for _, want := range []string{
		"Paired: agent s3-bot",
		"hello.txt",         // s3 ls of its own prefix
		"hello from s3-bot", // read back from its own prefix
		"refused, as it should be: outside its prefix",
		"refused, as it should be: the bucket root",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the guide's output lacks %q", want)
		}
	}
	if n := strings.Count(text, "AccessDenied"); n != 2 {
		t.Errorf("want the two refusals to be AccessDenied, found %d", n)
	}
	if t.Failed() {
		t.Logf("output:\n%s\n%s", text, logs())
	}
}
