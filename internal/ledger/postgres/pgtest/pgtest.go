// Package pgtest starts a throwaway PostgreSQL cluster for a test: initdb into a
// temp dir, the server listening only on a Unix socket in that dir (no TCP port,
// so parallel test runs cannot collide), password (SCRAM) authentication for
// every connection, and everything stopped and removed when the test ends.
// Nothing depends on a server already running.
//
// The binaries are found on PATH (initdb), then in /usr/lib/postgresql/*/bin
// (where Debian's postgresql package puts them), the newest version first.
// PostgreSQL refuses to run as root: as root the cluster runs as the user
// "nobody" (present on every Debian machine), through the process credentials
// of exec, so no sudo or runuser is needed. scripts/test installs PostgreSQL
// from the distribution when initdb is missing.
//
// A test that needs PostgreSQL and cannot find it fails when CI=true and is
// skipped otherwise.
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// User is the cluster's superuser, the user every URL names.
const User = "agentkeys"

// Cluster is one running throwaway PostgreSQL server.
type Cluster struct {
	dir      string // socket dir; the data dir is dir/data
	bin      string
	cred     *syscall.Credential
	password string
	cmd      *exec.Cmd
	log      *syncBuffer
	exited   chan struct{}
	stopOnce sync.Once
	dbs      atomic.Int64
}

// Start starts a cluster that is stopped and removed when t ends. Without
// PostgreSQL it fails t when CI=true and skips it otherwise.
func Start(t testing.TB) *Cluster {
	t.Helper()
	bin, err := BinDir()
	if err != nil {
		missing(t, err, os.Getenv("CI") == "true")
		return nil
	}
	c, err := start(bin)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

// missing fails t in CI and skips it elsewhere.
func missing(t testing.TB, err error, ci bool) {
	t.Helper()
	if ci {
		t.Fatalf("pgtest: %v (CI=true: the PostgreSQL tests must run; scripts/test installs it)", err)
	} else {
		t.Skipf("pgtest: %v; skipped outside CI (scripts/test installs PostgreSQL)", err)
	}
}

// BinDir is the directory holding initdb and postgres, or an error saying that
// PostgreSQL is not installed.
func BinDir() (string, error) { return binDir(exec.LookPath, "/usr/lib/postgresql") }

// binDir looks for initdb with lookPath, then in root/VERSION/bin, newest first.
func binDir(lookPath func(string) (string, error), root string) (string, error) {
	var dirs []string
	if p, err := lookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(r))
		}
	}
	found, _ := filepath.Glob(filepath.Join(root, "*", "bin", "initdb"))
	slices.SortFunc(found, func(a, b string) int { return version(b) - version(a) }) // newest first
	for _, f := range found {
		dirs = append(dirs, filepath.Dir(f))
	}
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL is not installed: no initdb on PATH or in %s/*/bin (apt-get install postgresql)", root)
}

func version(initdb string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return n
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// credential is who the cluster runs as: nobody when this process is root
// (PostgreSQL refuses root), else this process's user (nil).
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("running as root, and there is no user nobody to run PostgreSQL as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// searchable reports whether every directory from / to dir lets others through.
func searchable(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

func start(bin string) (_ *Cluster, err error) {
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	// Under os.TempDir (not t.TempDir, whose parents are private to this user):
	// the server's user must reach it. Short, so the socket path fits.
	base := os.TempDir()
	if cred != nil && !searchable(base) {
		base = "/tmp" // TMPDIR is private to root: nobody could not reach the cluster
	}
	dir, err := os.MkdirTemp(base, "akpg-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	pw := make([]byte, 16)
	rand.Read(pw)
	c := &Cluster{dir: dir, bin: bin, cred: cred, password: hex.EncodeToString(pw), log: &syncBuffer{}}
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(c.password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if cred != nil {
		for _, p := range []string{dir, pwfile} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, err
			}
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", User, "--pwfile="+pwfile,
		"--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	os.Remove(pwfile)
	if err := c.run(); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// run starts the server on the cluster's data dir and waits until it accepts
// connections (after crash recovery, if it was killed).
func (c *Cluster) run() error {
	// Only a Unix socket in dir; fsync stays on (the default): commits are as
	// durable as in production, so benchmarks against it mean something.
	c.cmd = exec.Command(filepath.Join(c.bin, "postgres"), "-D", filepath.Join(c.dir, "data"), "-k", c.dir,
		"-c", "listen_addresses=", "-c", "shared_buffers=32MB", "-c", "max_connections=60")
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	exited := make(chan struct{})
	c.exited = exited
	go func() { c.cmd.Wait(); close(exited) }()
	return c.waitReady(30 * time.Second)
}

// Kill is kill -9 of the server and every backend (its process group), as a
// power cut looks to clients: open connections break, nothing is flushed or
// shut down cleanly. Restart brings it back on the same data dir.
func (c *Cluster) Kill(t testing.TB) {
	t.Helper()
	if err := syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("pgtest: kill -9: %v", err)
	}
	<-c.exited
	// The backends are in the group too; wait until the last has gone, so the
	// restart does not find the old shared memory still attached.
	for range 200 {
		if syscall.Kill(-c.cmd.Process.Pid, 0) != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pgtest: the killed server's processes are still running after 2 s")
}

// Restart starts the server again on the same data dir (after Kill: it
// recovers from its WAL, as after a crash) and waits until it is ready.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	if err := c.run(); err != nil {
		t.Fatalf("pgtest: restart: %v", err)
	}
}

func (c *Cluster) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("postgres exited: %s", c.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after %s: %v\n%s", limit, err, c.log.String())
		}
	}
}

// Dir is the cluster's socket directory (the URLs' host).
func (c *Cluster) Dir() string { return c.dir }

// Password is the superuser's password (in every URL).
func (c *Cluster) Password() string { return c.password }

// URL is the postgres:// URL of database db, with the password.
func (c *Cluster) URL(db string) string {
	return (&url.URL{Scheme: "postgres", User: url.UserPassword(User, c.password), Path: "/" + db,
		RawQuery: url.Values{"host": {c.dir}}.Encode()}).String()
}

// NewDatabase creates an empty database and returns its URL.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("ledger_%d", c.dbs.Add(1))
	c.Exec(t, c.URL("postgres"), "CREATE DATABASE "+name)
	return c.URL(name)
}

// Exec runs q on the database at url (set up, tamper, inspect).
func (c *Cluster) Exec(t testing.TB, url, q string, args ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, q, args...); err != nil {
		t.Fatalf("pgtest: %s: %v", q, err)
	}
}

// Stop shuts the server down (fast shutdown, then kill) and removes its dir.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		if c.cmd != nil && c.cmd.Process != nil {
			select {
			case <-c.exited: // killed, not restarted
			default:
				c.cmd.Process.Signal(syscall.SIGINT)
				select {
				case <-c.exited:
				case <-time.After(20 * time.Second):
					syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
					<-c.exited
				}
			}
		}
		os.RemoveAll(c.dir)
	})
}

// Log is what the server printed so far.
func (c *Cluster) Log() string { return c.log.String() }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.TrimSpace(s.b.String())
}
