package daemon

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentkeys/agentkeys/internal/problem"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func modeOf(t *testing.T, path string) (os.FileMode, int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm(), int(fi.Sys().(*syscall.Stat_t).Gid)
}

func codeOf(err error) problem.Code {
	if err == nil {
		return ""
	}
	return problem.As(err).Code
}

// serve serves src on a new socket at path (for group) until the test ends.
func serve(t *testing.T, path, group string, src Source) {
	t.Helper()
	ln, err := ListenSocket(path, group)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeSocket(ctx, ln, src, quiet) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

func TestListenSocketModes(t *testing.T) {
	dir := t.TempDir()
	private := filepath.Join(dir, "private.sock")
	ln, err := ListenSocket(private, "")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if m, _ := modeOf(t, private); m != 0o600 {
		t.Errorf("socket without a group is %v, want 0600", m)
	}

	// A group this process may give the socket to: its own.
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{g.Name, g.Gid} {
		shared := filepath.Join(dir, "shared-"+name+".sock")
		ln, err := ListenSocket(shared, name)
		if err != nil {
			t.Fatalf("--socket-group %s: %v", name, err)
		}
		defer ln.Close()
		if m, gid := modeOf(t, shared); m != 0o660 || gid != os.Getgid() {
			t.Errorf("socket for group %s is %v group %d, want 0660 group %d", name, m, gid, os.Getgid())
		}
	}
}

// TestListenSocketAnyUmask: the socket is 0600 even under umask 0, the
// umask is left as it was, and the private directory the socket was bound in
// is gone.
func TestListenSocketAnyUmask(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.sock")
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	ln, err := ListenSocket(path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if m, _ := modeOf(t, path); m != 0o600 {
		t.Errorf("socket under umask 0 is %v, want 0600", m)
	}
	if u := syscall.Umask(0); u != 0 {
		t.Errorf("ListenSocket left the umask at %#o, want 0", u)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(des) != 1 || des[0].Name() != "d.sock" {
		var names []string
		for _, de := range des {
			names = append(names, de.Name())
		}
		t.Errorf("socket directory holds %q, want only d.sock", names)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("socket does not accept connections: %v", err)
	}
	c.Close()
}

func TestListenSocketRefuses(t *testing.T) {
	dir := t.TempDir()
	// A directory every user may write: anyone could replace the socket.
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o777)
	if _, err := ListenSocket(filepath.Join(open, "s.sock"), ""); codeOf(err) != problem.BadRequest || !strings.Contains(err.Error(), "every user may write") {
		t.Errorf("socket in a world-writable directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(open, "s.sock")); err == nil {
		t.Error("a refused socket was created")
	}
	// The sticky bit (as on /tmp) keeps others from replacing it.
	os.Chmod(open, 0o777|os.ModeSticky)
	ln, err := ListenSocket(filepath.Join(open, "s.sock"), "")
	if err != nil {
		t.Fatalf("socket in a sticky world-writable directory: %v", err)
	}
	ln.Close()
	// An unknown group.
	if _, err := ListenSocket(filepath.Join(dir, "g.sock"), "no-such-group-agentkeys"); codeOf(err) != problem.BadRequest || !strings.Contains(err.Error(), "no such group") {
		t.Errorf("unknown group: %v", err)
	}
	// Not a socket.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o600)
	if _, err := ListenSocket(file, ""); codeOf(err) != problem.BadRequest {
		t.Errorf("a regular file at --socket: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "x" {
		t.Error("ListenSocket replaced a regular file")
	}
}

// mcpClient connects the SDK's client to an in-memory MCP server on b.
func mcpClient(t *testing.T, b Backend) *mcp.ClientSession {
	t.Helper()
	ct, st := mcp.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := NewMCPServer(b, quiet).Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func callText(t *testing.T, cs *mcp.ClientSession, tool string, args map[string]any) (string, bool) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			sb.WriteString(tc.Text)
		}
	}
	return sb.String(), res.IsError
}

// TestFrontSameAsDirect: the MCP tools on a SocketClient are the tools on the
// Source behind the socket — the same list and schemas, the same answers and
// error texts, code for code.
func TestFrontSameAsDirect(t *testing.T) {
	src := Source{Dir: Dir(t.TempDir())} // not paired: every call is refused
	sock := filepath.Join(t.TempDir(), "d.sock")
	serve(t, sock, "", src)
	direct, front := mcpClient(t, src), mcpClient(t, NewSocketClient(sock))

	tools := func(cs *mcp.ClientSession) string {
		res, err := cs.ListTools(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(res.Tools)
		return string(b)
	}
	if d, f := tools(direct), tools(front); d != f || !strings.Contains(d, "get_credential") {
		t.Errorf("tools differ:\ndirect: %s\n front: %s", d, f)
	}
	for _, c := range []struct {
		tool string
		args map[string]any
		code problem.Code
	}{
		{"get_credential", map[string]any{"service": "openai"}, CodeDenied},
		{"get_credential", map[string]any{"service": "a/b?c#d"}, CodeBadRequest},               // refused locally, before any broker call
		{"get_credential", map[string]any{"service": "openai", "wait_seconds": 5}, CodeDenied}, // the wait goes through the socket
		{"get_credential", map[string]any{"service": "openai", "wait_seconds": 301}, CodeBadRequest},
		{"list_credentials", map[string]any{}, CodeDenied},
		{"cloud_credentials", map[string]any{"provider": "aws", "role_arn": "arn:aws:iam::1:role/r", "duration": 900}, CodeDenied},
		{"cloud_credentials", map[string]any{"provider": "aws", "role_arn": ""}, CodeBadRequest}, // an empty role_arn
		{"cloud_credentials", map[string]any{"provider": "gcp", "role_arn": "x"}, CodeBadRequest},
	} {
		dt, dErr := callText(t, direct, c.tool, c.args)
		ft, fErr := callText(t, front, c.tool, c.args)
		if !dErr || !fErr || dt != ft || !strings.HasPrefix(ft, string(c.code)+": ") {
			t.Errorf("%s %v:\ndirect (error=%v): %q\n front (error=%v): %q\nwant both %s", c.tool, c.args, dErr, dt, fErr, ft, c.code)
		}
	}
}

// TestSocketClientRefuses: a missing socket, a path that is not a socket, a
// socket every user may use and a socket this user may not reach each get a
// stable code and a fix, and nothing is sent.
func TestSocketClientRefuses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := NewSocketClient(filepath.Join(dir, "missing.sock")).List(ctx); codeOf(err) != CodeUnreachable || !strings.Contains(problem.As(err).Fix, "daemon serve") {
		t.Errorf("missing socket: %v", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := NewSocketClient(file).Get(ctx, "openai", Wait{}); codeOf(err) != CodeUnreachable || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a file: %v", err)
	}
	// A socket loosened by hand to every user: refused before any request.
	sock := filepath.Join(dir, "open.sock")
	serve(t, sock, "", Source{Dir: Dir(t.TempDir())})
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSocketClient(sock).Get(ctx, "openai", Wait{}); codeOf(err) != CodeDenied || !strings.Contains(err.Error(), "every user") {
		t.Errorf("a world-accessible socket: %v", err)
	}
	os.Chmod(sock, 0o600)
	if _, err := NewSocketClient(sock).Get(ctx, "openai", Wait{}); codeOf(err) != CodeDenied || !strings.Contains(err.Error(), "not paired") {
		t.Errorf("the same socket, 0600: want the daemon's own DENIED, got %v", err)
	}
	// A stale socket file: no daemon listens.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if err := os.Chmod(stale, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSocketClient(stale).List(ctx); codeOf(err) != CodeUnreachable {
		t.Errorf("a socket nobody serves: %v", err)
	}
}

// TestCheckPrivate: the daemon refuses a directory or session file others may read.
func TestCheckPrivate(t *testing.T) {
	d := DirOf(t.TempDir())
	if err := d.CheckPrivate(); err != nil {
		t.Fatalf("no daemon directory yet: %v", err)
	}
	if err := d.SaveSession(&Session{Server: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if err := d.CheckPrivate(); err != nil {
		t.Fatalf("as the daemon writes it: %v", err)
	}
	os.Chmod(string(d), 0o750)
	if err := d.CheckPrivate(); codeOf(err) != CodeDenied || !strings.Contains(problem.As(err).Fix, "chmod -R go=") {
		t.Errorf("a 0750 directory: %v", err)
	}
	os.Chmod(string(d), 0o700)
	os.Chmod(d.SessionPath(), 0o644)
	if err := d.CheckPrivate(); codeOf(err) != CodeDenied {
		t.Errorf("a 0644 session file: %v", err)
	}
}

// TestServeSocketWaitsForInFlight: when ctx ends, the socket server stops
// accepting and returns only once the request in flight has been answered.
func TestServeSocketWaitsForInFlight(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	ln, err := ListenSocket(path, "")
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		finished.Store(true)
		io.WriteString(w, "answered")
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveHandler(ctx, ln, h) }()
	answer := make(chan string, 1)
	go func() {
		c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
		resp, err := c.Get("http://daemon/slow")
		if err != nil {
			answer <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answer <- string(b)
	}()
	<-entered
	cancel()
	// A correct server cannot return before release; a broken one returns at
	// once. The timer only bounds how long the test gives it to do so.
	var returnedEarly bool
	select {
	case err := <-done:
		returnedEarly = true
		close(release)
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(300 * time.Millisecond):
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if returnedEarly || !finished.Load() {
		t.Errorf("the socket server returned with a request in flight (finished %v)", finished.Load())
	}
	if a := <-answer; a != "answered" {
		t.Errorf("the request in flight got %q, want its answer", a)
	}
}
