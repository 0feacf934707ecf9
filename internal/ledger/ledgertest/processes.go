package ledgertest

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// The concurrent-writers case across OS processes, for a driver whose store
// several processes share (postgres; sqlite admits one writing process per file
// by design, so it runs only the in-process case of Run). The test binary runs
// itself again as each writer: its TestMain calls WriterMain first.

const (
	envWriter = "AGENTKEYS_LEDGERTEST_WRITER" // the writer's number
	envStore  = "AGENTKEYS_LEDGERTEST_STORE"  // the store's URL: in the environment, never in argv (it may hold a password)
)

// processCommits is how many commits each writer process makes, each of 1-3
// entries (the batches a group commit hands the driver).
const processCommits = 30

// WriterMain returns at once unless this process was started by
// ConcurrentProcesses as a writer; then it appends with a handle from open,
// prints "SEQ HASH" for every entry it committed, and exits.
func WriterMain(open func(url string) (ledger.Driver, error)) {
	id := os.Getenv(envWriter)
	if id == "" {
		return
	}
	if err := writer(id, os.Getenv(envStore), open, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "writer %s: %v\n", id, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func writer(id, url string, open func(string) (ledger.Driver, error), start io.Reader, out io.Writer) error {
	ctx := context.Background()
	d, err := open(url)
	if err != nil {
		return err
	}
	defer d.Close()
	// Wait for the go: both writers start appending together.
	if _, err := start.Read(make([]byte, 1)); err != nil {
		return fmt.Errorf("waiting for the start: %w", err)
	}
	w := bufio.NewWriter(out)
	defer w.Flush()
	for n, conflicts := 0, 0; n < processCommits; {
		h, ok, err := d.Head(ctx)
		if err != nil {
			return err
		}
		var prev *ledger.Head
		if ok {
			prev = &h
		}
		es := chain(prev, 1+n%3)
		for i := range es { // this writer's own payload: a fork would show
			es[i].Payload = fmt.Appendf(nil, `{"process":%q,"n":%d}`, id, es[i].Seq)
			if i > 0 {
				es[i].PrevHash = es[i-1].Hash()
			}
		}
		switch err := d.Commit(ctx, es, []ledger.Write{{Key: "p/" + id, Value: []byte{byte(n)}}}); {
		case err == nil:
			for _, e := range es {
				h := e.Hash()
				fmt.Fprintf(w, "%d %s\n", e.Seq, hex.EncodeToString(h[:]))
			}
			n++
		case errors.Is(err, ledger.ErrConflict):
			if conflicts++; conflicts > 5000 {
				return fmt.Errorf("%d conflicts: the handle does not follow the other process's commits", conflicts)
			}
		default:
			return err
		}
	}
	return nil
}

// ConcurrentProcesses starts two writer processes (this test binary again, see
// WriterMain) on the empty store at url, lets them append at once, and checks
// that the store holds one chain: every seq once, no gap, each entry linking to
// the one before, and every entry a writer committed in it.
func ConcurrentProcesses(t *testing.T, url string, open func(url string) (ledger.Driver, error)) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	type proc struct {
		cmd            *exec.Cmd
		go_            io.WriteCloser
		stdout, stderr strings.Builder
	}
	procs := make([]*proc, 2)
	for i := range procs {
		p := &proc{cmd: exec.Command(exe, "-test.run=^$")}
		p.cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", envWriter, i), envStore+"="+url)
		p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
		if p.go_, err = p.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = p
	}
	for _, p := range procs {
		p.go_.Write([]byte{1})
		p.go_.Close()
	}
	var wg sync.WaitGroup
	errs := make([]error, len(procs))
	for i, p := range procs {
		wg.Go(func() {
			done := make(chan error, 1)
			go func() { done <- p.cmd.Wait() }()
			select {
			case errs[i] = <-done:
			case <-time.After(2 * time.Minute): // a bound, not an assertion on speed
				p.cmd.Process.Kill()
				errs[i] = fmt.Errorf("did not finish: %v", <-done)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer process %d: %v\n%s", i, err, procs[i].stderr.String())
		}
	}
	d, err := open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	all, err := d.Entries(context.Background(), 0, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range all {
		if e.Seq != uint64(i) {
			t.Fatalf("entry %d has seq %d: a gap or a duplicate", i, e.Seq)
		}
		if i > 0 && e.PrevHash != all[i-1].Hash() {
			t.Fatalf("entry %d does not link to entry %d: a fork", i, i-1)
		}
	}
	total := 0
	for i, p := range procs {
		for line := range strings.Lines(p.stdout.String()) {
			var seq uint64
			var h string
			if _, err := fmt.Sscanf(line, "%d %s", &seq, &h); err != nil {
				t.Fatalf("writer process %d printed %q", i, line)
			}
			if seq >= uint64(len(all)) {
				t.Fatalf("writer process %d committed entry %d, but the store ends at %d", i, seq, len(all)-1)
			}
			if got := all[seq].Hash(); hex.EncodeToString(got[:]) != h {
				t.Fatalf("writer process %d's committed entry %d is not in the chain", i, seq)
			}
			total++
		}
		if v, _, _ := d.Get(context.Background(), fmt.Sprintf("p/%d", i)); len(v) != 1 || v[0] != processCommits-1 {
			t.Fatalf("writer process %d's last state write reads %v", i, v)
		}
	}
	if total != len(all) {
		t.Fatalf("the store holds %d entries, the writer processes committed %d", len(all), total)
	}
	t.Logf("%d entries from 2 processes, one chain", len(all))
}
