package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The users of TestDaemonUserSeparation. They are created when missing and left
// in place (a later run finds them), without a home and without a login shell.
const (
	daemonTestUser = "agentkeys-daemon-test"
	agentTestUser  = "agentkeys-agent-test"
)

// probeEnv makes the e2e test binary a probe instead of a test run: it is run as
// another user to report what that user may do (open a file, dial a socket),
// errno by errno. Running the test binary keeps the probe's code here, in Go,
// and its answer exact.
const probeEnv = "AGENTKEYS_E2E_PROBE"

func init() {
	mode := os.Getenv(probeEnv)
	if mode == "" {
		return
	}
	for _, path := range os.Args[1:] {
		var err error
		switch mode {
		case "open":
			var f *os.File
			if f, err = os.Open(path); err == nil {
				f.Close()
			}
		case "dial":
			var c net.Conn
			if c, err = net.Dial("unix", path); err == nil {
				c.Close()
			}
		default:
			err = fmt.Errorf("unknown probe %q", mode)
		}
		var errno syscall.Errno
		switch {
		case err == nil:
			fmt.Println("ok")
		case errors.As(err, &errno):
			fmt.Println(strconv.Itoa(int(errno)))
		default:
			fmt.Println("error: " + err.Error())
		}
	}
	os.Exit(0)
}

// osUser is an unprivileged account the test runs processes as.
type osUser struct {
	name string
	cred *syscall.Credential
	gid  int
}

// ensureUser creates a system user (and its group) when missing and adds it to
// the groups in also.
func ensureUser(t *testing.T, name string, also ...string) osUser {
	t.Helper()
	if _, err := user.Lookup(name); err != nil {
		args := []string{"--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"}
		if _, err := user.LookupGroup(name); err == nil {
			args = append(args, "--gid", name)
		} else {
			args = append(args, "--user-group")
		}
		if out, err := exec.Command("useradd", append(args, name)...).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v: %s", name, err, out)
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range also {
		grp, err := user.LookupGroup(g)
		if err != nil {
			t.Fatal(err)
		}
		if ids, _ := u.GroupIds(); !slices.Contains(ids, grp.Gid) {
			if out, err := exec.Command("usermod", "--append", "--groups", g, name).CombinedOutput(); err != nil {
				t.Fatalf("usermod -aG %s %s: %v: %s", g, name, err, out)
			}
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	ids, err := u.GroupIds()
	if err != nil {
		t.Fatal(err)
	}
	var groups []uint32
	for _, id := range ids {
		n, _ := strconv.Atoi(id)
		groups = append(groups, uint32(n))
	}
	return osUser{name: name, gid: gid, cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}
}

// as makes cmd run as u.
func (u osUser) as(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred}
	return cmd
}

// probe runs the probe as u on paths and returns one answer per path: "ok" or
// the errno's number.
func (u osUser) probe(t *testing.T, probeBin, mode string, paths ...string) []string {
	t.Helper()
	cmd := u.as(exec.Command(probeBin, paths...))
	cmd.Env = childEnv(probeEnv + "=" + mode)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe %s as %s: %v: %s", mode, u.name, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(paths) {
		t.Fatalf("probe %s as %s: %d answers for %d paths: %s", mode, u.name, len(lines), len(paths), out)
	}
	return lines
}

// copyExecutable copies src to dst, mode 0755.
func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// mkdirOwned makes dir with mode, owned by uid:gid.
func mkdirOwned(t *testing.T, dir string, mode os.FileMode, uid, gid int) {
	t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
}

func ownerOf(t *testing.T, path string) (uid, gid int, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid), fi.Mode().Perm()
}

// toolsJSON is the tools an MCP session offers, as JSON: names, descriptions and
// schemas.
func toolsJSON(t *testing.T, cs *mcp.ClientSession) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), agentTimeout)
	defer cancel()
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(res.Tools)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDaemonUserSeparation is the deployment where the agent cannot read the
// daemon's keys: `daemon serve` runs as its own user on a socket of the agent's
// group; the agent user gets credentials through that socket (with `run
// --socket` and with the SDK's MCP client on `daemon mcp --socket`), cannot
// open the daemon's files, and a third user cannot even connect.
func TestDaemonUserSeparation(t *testing.T) {
	if os.Geteuid() != 0 {
		if testing.Short() {
			t.Skip("needs root to create users (-short)")
		}
		t.Fatal("TestDaemonUserSeparation must run as root (CI runs .ci/run as root): it creates two users and runs the daemon and the agent as them. Run the e2e tests as root, or pass -short to skip it")
	}
	agentUser := ensureUser(t, agentTestUser)
	daemonUser := ensureUser(t, daemonTestUser, agentTestUser) // a member of the agent's group, to hand it the socket
	nobody := osUser{name: "nobody", cred: &syscall.Credential{Uid: 65534, Gid: 65534}}

	// One root-owned directory the users may traverse, with the binaries, the
	// daemon's home (its user only), the socket's directory (daemon user, agent
	// group) and the agent's home.
	root, err := os.MkdirTemp("", "agentkeys-separation-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	akBin, probeBin := filepath.Join(root, "agentkeys"), filepath.Join(root, "probe")
	copyExecutable(t, bin, akBin)
	copyExecutable(t, os.Args[0], probeBin)
	daemonHome, runDir, agentHome := filepath.Join(root, "daemon-home"), filepath.Join(root, "run"), filepath.Join(root, "agent-home")
	duid := int(daemonUser.cred.Uid)
	mkdirOwned(t, daemonHome, 0o700, duid, daemonUser.gid)
	mkdirOwned(t, runDir, 0o750, duid, agentUser.gid)
	mkdirOwned(t, agentHome, 0o700, int(agentUser.cred.Uid), agentUser.gid)
	sock := filepath.Join(runDir, "agentkeys.sock")

	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	openai, stripe := "sk-openai-"+randomHex(16), "sk-stripe-"+randomHex(16)
	h.akStore(o, "openai", openai)
	h.akStore(o, "stripe", stripe)
	h.pairAgentIn(daemonHome, s, o, "bot", "openai")
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", duid, daemonUser.gid), daemonHome).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	session := filepath.Join(daemonHome, "daemon", "session.json")

	// The daemon, as its own user.
	srv := daemonUser.as(exec.Command(akBin, "daemon", "serve", "--socket", sock, "--socket-group", agentTestUser))
	srv.Env = childEnv("AGENTKEYS_HOME=" + daemonHome)
	srvLog := h.newOutput()
	srv.Stdout, srv.Stderr = srvLog, srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan struct{})
	go func() { srv.Wait(); close(srvDone) }()
	t.Cleanup(func() { srv.Process.Kill(); <-srvDone })
	exited := func() bool {
		select {
		case <-srvDone:
			return true
		default:
			return false
		}
	}
	made := func() bool { fi, err := os.Lstat(sock); return err == nil && fi.Mode()&os.ModeSocket != 0 }
	if !waitFor(agentTimeout, func() bool { return made() || exited() }) || !made() {
		if exited() {
			t.Fatalf("daemon serve exited: %s", srvLog.String())
		}
		t.Fatalf("daemon serve made no socket: %s", srvLog.String())
	}
	if uid, gid, mode := ownerOf(t, sock); uid != duid || gid != agentUser.gid || mode != 0o660 {
		t.Errorf("socket is %d:%d %v, want %d:%d 0660 (daemon user, agent group)", uid, gid, mode, duid, agentUser.gid)
	}
	for path, want := range map[string]os.FileMode{session: 0o600, filepath.Dir(session): 0o700} {
		if uid, _, mode := ownerOf(t, path); uid != duid || mode != want {
			t.Errorf("%s is owned by %d with mode %v, want the daemon user (%d) and %v", path, uid, mode, duid, want)
		}
	}

	// The agent cannot open the daemon's files; it may dial the socket, nobody else may.
	eacces := strconv.Itoa(int(syscall.EACCES))
	paths := []string{session, filepath.Dir(session), daemonHome}
	for i, got := range agentUser.probe(t, probeBin, "open", paths...) {
		if got != eacces {
			t.Errorf("the agent user opening %s: %s, want EACCES (%s)", paths[i], got, eacces)
		}
	}
	if got := agentUser.probe(t, probeBin, "dial", sock); got[0] != "ok" {
		t.Errorf("the agent user dialing the socket: %s, want ok", got[0])
	}
	if got := nobody.probe(t, probeBin, "dial", sock); got[0] != eacces {
		t.Errorf("user nobody dialing the socket: %s, want EACCES (%s)", got[0], eacces)
	}

	// The agent runs a command with a credential from the socket; the child sees
	// no AGENTKEYS_ variable.
	agentEnv := childEnv("AGENTKEYS_HOME="+agentHome, "HOME="+agentHome)
	runCmd := agentUser.as(exec.Command(akBin, "run", "--socket", sock, "--env", "TOKEN=openai", "--",
		"sh", "-c", `printf %s "$TOKEN" | sha256sum; env | grep ^AGENTKEYS_ | cut -d= -f1; exit 0`))
	runCmd.Env = agentEnv
	runOut, runErr := h.newOutput(), h.newOutput()
	runCmd.Stdout, runCmd.Stderr = runOut, runErr
	if err := runCmd.Run(); err != nil {
		t.Fatalf("run --socket as the agent user: %v: %s", err, runErr.String())
	}
	sum := sha256.Sum256([]byte(openai))
	if got := strings.Fields(runOut.String()); len(got) != 2 || got[0] != hex.EncodeToString(sum[:]) {
		t.Errorf("run --socket as the agent user: the child did not get exactly the credential (and nothing else): %q", got)
	}
	// Out of scope: refused with the daemon's stable code.
	denied := agentUser.as(exec.Command(akBin, "run", "--socket", sock, "--env", "X=stripe", "--", "true"))
	denied.Env = agentEnv
	deniedErr := h.newOutput()
	denied.Stderr = deniedErr
	if err := denied.Run(); denied.ProcessState.ExitCode() != 3 || !strings.Contains(deniedErr.String(), "DENIED") {
		t.Errorf("run --socket for an out-of-scope service: %v: %s", err, deniedErr.String())
	}

	// The thin MCP front, as the agent user, driven by the SDK's client: the same
	// tools as daemon mcp, and every call answered through the socket.
	front := agentUser.as(exec.Command(akBin, "daemon", "mcp", "--socket", sock))
	front.Env = agentEnv
	frontLog := h.newOutput()
	front.Stderr = frontLog
	ctx, cancel := context.WithTimeout(context.Background(), agentTimeout)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: front}, nil)
	if err != nil {
		t.Fatalf("connecting to daemon mcp --socket as the agent user: %v: %s", err, frontLog.String())
	}
	defer cs.Close()
	direct, _ := h.mcpSession(daemonHome)
	if got, want := toolsJSON(t, cs), toolsJSON(t, direct); got != want {
		t.Errorf("daemon mcp --socket offers other tools than daemon mcp:\n front: %s\ndirect: %s", got, want)
	}
	if text, isErr := mcpCall(t, cs, "list_credentials", map[string]any{}); isErr || !strings.Contains(text, `"openai"`) {
		t.Errorf("list_credentials through the front: error=%v %s", isErr, text)
	}
	if v, isErr := getCredential(t, cs, "openai"); isErr || v != openai {
		t.Errorf("get_credential openai through the front: error=%v, right value=%v", isErr, v == openai)
	}
	frontDenied, isErr := getCredential(t, cs, "stripe")
	directDenied, _ := getCredential(t, direct, "stripe")
	if !isErr || !strings.HasPrefix(frontDenied, "DENIED: ") || frontDenied != directDenied {
		t.Errorf("get_credential stripe through the front: error=%v %q; directly: %q", isErr, frontDenied, directDenied)
	}
	// The front keeps nothing: the agent's home is still empty.
	if ents, err := os.ReadDir(agentHome); err != nil || len(ents) != 0 {
		t.Errorf("the front wrote into the agent's home: %v %v", ents, err)
	}
	if !strings.Contains(srvLog.String(), "credential served") {
		t.Errorf("the daemon's log shows no credential served through the socket: %s", srvLog.String())
	}
}

// TestDaemonSocketRefusals: the separated setup's commands refuse what would
// expose the daemon's keys or do nothing, with a clear error, and create nothing.
func TestDaemonSocketRefusals(t *testing.T) {
	h := newHarness(t)
	group := strconv.Itoa(os.Getgid())
	dh := t.TempDir()
	ddir := filepath.Join(dh, "daemon")
	refused := func(wantCode int, wantText string, args ...string) {
		t.Helper()
		r := h.cli(dh, args...)
		if r.code != wantCode || !strings.Contains(r.stderr, wantText) || !strings.Contains(r.stderr, "Fix: ") {
			t.Errorf("agentkeys %s: exit %d (want %d), stderr %q (want %q and a fix)", strings.Join(args, " "), r.code, wantCode, r.stderr, wantText)
		}
	}
	refused(2, "--socket-group needs --socket", "daemon", "serve", "--socket-group", group)
	refused(2, "in the daemon's own directory", "daemon", "serve", "--socket", filepath.Join(ddir, "a.sock"), "--socket-group", group)
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o777)
	refused(2, "every user may write", "daemon", "serve", "--socket", filepath.Join(open, "a.sock"), "--socket-group", group)
	refused(2, "does nothing with --socket", "daemon", "mcp", "--socket", filepath.Join(open, "a.sock"), "--sts-endpoint", "http://127.0.0.1:1")

	// A daemon directory others may read: serve and mcp refuse to start.
	if err := os.Mkdir(ddir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(ddir, 0o755)
	os.WriteFile(filepath.Join(ddir, "session.json"), []byte("{}"), 0o600)
	sock := filepath.Join(t.TempDir(), "a.sock")
	refused(3, "other users may read the daemon's keys", "daemon", "serve", "--socket", sock)
	refused(3, "other users may read the daemon's keys", "daemon", "mcp")
	if _, err := os.Lstat(sock); err == nil {
		t.Error("a refused daemon serve made its socket")
	}

	// No daemon behind the socket: run says so, and runs nothing.
	marker := filepath.Join(t.TempDir(), "ran")
	refused(5, "no daemon socket at", "run", "--socket", sock, "--", "touch", marker)
	if _, err := os.Stat(marker); err == nil {
		t.Error("run --socket ran the command without credentials")
	}

	// The MCP configuration of the front names the socket and no home.
	var cfg struct {
		MCPServers map[string]struct {
			Args []string
			Env  map[string]string
		}
	}
	if err := json.Unmarshal([]byte(h.akOK(dh, "daemon", "mcp-config", "--socket", sock)), &cfg); err != nil {
		t.Fatal(err)
	}
	if s := cfg.MCPServers["agentkeys"]; strings.Join(s.Args, " ") != "daemon mcp --socket "+sock || len(s.Env) != 0 {
		t.Errorf("mcp-config --socket: %+v", s)
	}
}
