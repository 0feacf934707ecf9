package e2e

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serverLogs starts a server with extra args and its stderr on a terminal or a
// pipe, waits for the "ready" line, stops it and returns what it logged.
func serverLogs(t *testing.T, h *harness, home string, onTerminal bool, args ...string) string {
	t.Helper()
	out := h.newOutput()
	cmd := exec.Command(bin, append([]string{"server", "--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = childEnv("AGENTKEYS_HOME=" + home)
	if onTerminal {
		ptm, tty := openPTY(t)
		cmd.Stderr = tty
		go io.Copy(out, ptm)
	} else {
		cmd.Stderr = out
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(startTimeout)
	for ready := false; !ready; {
		text, changed := out.snapshot()
		ready = strings.Contains(text, "msg=ready") || strings.Contains(text, `"msg":"ready"`)
		if ready {
			break
		}
		select {
		case <-changed:
		case err := <-done:
			t.Fatalf("server %v exited before ready (%v):\n%s", args, err, out.String())
		case <-deadline:
			cmd.Process.Kill()
			<-done
			t.Fatalf("server %v not ready within %s:\n%s", args, startTimeout, out.String())
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(stopTimeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("server %v did not stop within %s", args, stopTimeout)
	}
	if onTerminal {
		// the terminal stays open (the test holds its tty): wait for the last line
		for {
			text, changed := out.snapshot()
			if strings.Contains(text, "stopped") {
				break
			}
			select {
			case <-changed:
			case <-time.After(stopTimeout):
				t.Fatalf("no \"stopped\" line on the terminal:\n%s", text)
			}
		}
	}
	return strings.ReplaceAll(out.String(), "\r\n", "\n")
}

// Problem 6: text logs on a terminal, JSON otherwise; --log-format chooses.
func TestServerLogFormat(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	isJSON := func(logs string) bool {
		lines := strings.Split(strings.TrimSpace(logs), "\n")
		for _, l := range lines {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil || m["msg"] == nil {
				return false
			}
		}
		return len(lines) > 2
	}
	isText := func(logs string) bool {
		lines := strings.Split(strings.TrimSpace(logs), "\n")
		for _, l := range lines {
			if !strings.HasPrefix(l, "time=") || !strings.Contains(l, " msg=") {
				return false
			}
		}
		return len(lines) > 2
	}
	if logs := serverLogs(t, h, home, true); !isText(logs) {
		t.Errorf("on a terminal the server logs JSON, want text:\n%s", logs)
	}
	if logs := serverLogs(t, h, home, false); !isJSON(logs) {
		t.Errorf("to a pipe the server does not log JSON:\n%s", logs)
	}
	if logs := serverLogs(t, h, home, true, "--log-format", "json"); !isJSON(logs) {
		t.Errorf("--log-format json on a terminal:\n%s", logs)
	}
	if logs := serverLogs(t, h, home, false, "--log-format", "text"); !isText(logs) {
		t.Errorf("--log-format text to a pipe:\n%s", logs)
	}
	if logs := serverLogs(t, h, home, false, "--log-format", "auto"); !isJSON(logs) {
		t.Errorf("--log-format auto to a pipe:\n%s", logs)
	}
	r := h.cli(home, "server", "--listen", "127.0.0.1:0", "--log-format", "yaml")
	wantProblem(t, r, 2, "BAD_REQUEST", "yaml")
	if !strings.Contains(h.cli(home, "server", "--help").stdout, "--log-format") {
		t.Error("server --help does not show --log-format")
	}
}
