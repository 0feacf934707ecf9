package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// openPTY opens a pseudo-terminal pair (Linux /dev/ptmx).
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening /dev/ptmx: %v", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlocking the pty: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("pty number: %v", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening the pty: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// ptyRun is a CLI process whose stdin and stderr are a terminal; stdout is a pipe.
type ptyRun struct {
	cmd          *exec.Cmd
	master       *os.File
	term, stdout *output // what the terminal shows; stdout
	done         chan struct{}
	code         int
	cancel       context.CancelFunc
}

// cliTTY starts the binary with stdin and stderr on a new terminal.
func (h *harness) cliTTY(home string, args ...string) *ptyRun {
	h.t.Helper()
	m, s := openPTY(h.t)
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	r := &ptyRun{master: m, term: h.newOutput(), stdout: h.newOutput(), done: make(chan struct{}), cancel: cancel}
	r.cmd = exec.CommandContext(ctx, bin, args...)
	r.cmd.Env = childEnv("AGENTKEYS_HOME="+home, "TERM=dumb")
	r.cmd.Stdin, r.cmd.Stderr, r.cmd.Stdout = s, s, r.stdout
	if err := r.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	s.Close()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := m.Read(buf)
			r.term.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	go func() { r.cmd.Wait(); r.code = r.cmd.ProcessState.ExitCode(); close(r.done) }()
	h.t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Kill()
			<-r.done
		}
		cancel()
	})
	return r
}

// waitTerm waits until the terminal shows text.
func (r *ptyRun) waitTerm(t *testing.T, text string) {
	t.Helper()
	deadline := time.After(agentTimeout)
	for {
		s, changed := r.term.snapshot()
		if strings.Contains(s, text) {
			return
		}
		select {
		case <-changed:
		case <-r.done:
			if strings.Contains(r.term.String(), text) {
				return
			}
			t.Fatalf("the process exited (%d) without showing %q on its terminal: %q", r.code, text, r.term.String())
		case <-deadline:
			t.Fatalf("the terminal did not show %q within %s: %q", text, agentTimeout, r.term.String())
		}
	}
}

// answer types a line on the terminal and waits for the process to exit.
func (r *ptyRun) answer(t *testing.T, line string) int {
	t.Helper()
	r.master.Write([]byte(line + "\n"))
	select {
	case <-r.done:
	case <-time.After(agentTimeout):
		t.Fatalf("the process did not exit after the answer %q; terminal: %q", line, r.term.String())
	}
	return r.code
}
