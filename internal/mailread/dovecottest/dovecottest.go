// Package dovecottest starts a throwaway Dovecot (Debian's dovecot-imapd) for
// tests: an unprivileged process (the user nobody when the test runs as
// root) with its own configuration in a temporary directory, IMAP on a
// loopback port, users with passwords (passwd-file) and SASL OAUTHBEARER
// tokens checked by an introspection endpoint the test serves. Without
// Dovecot a test fails under CI=true and skips elsewhere.
package dovecottest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/client"
)

// Binary is where Debian installs Dovecot.
const Binary = "/usr/sbin/dovecot"

// Server is a running Dovecot.
type Server struct {
	Addr   string // 127.0.0.1:PORT, plain IMAP (loopback only)
	dir    string
	uid    int
	gid    int
	mu     sync.Mutex
	users  map[string]string // user → password
	tokens map[string]string // OAUTHBEARER token → user
	verify func(token string) (user string, ok bool)
	cmd    *exec.Cmd
	out    *strings.Builder
}

func (s *Server) chown(p string) error {
	if s.uid < 0 {
		return nil
	}
	return os.Chown(p, s.uid, s.gid)
}

// Start starts Dovecot for the test; it stops when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing: apt-get install dovecot-imapd (scripts/test installs it)", Binary)
		}
		t.Skipf("%s is missing (apt-get install dovecot-imapd)", Binary)
	}
	s := &Server{uid: -1, gid: -1, users: map[string]string{}, tokens: map[string]string{}, out: &strings.Builder{}}
	runAs, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	base := ""
	if os.Getuid() == 0 {
		if runAs, err = user.Lookup("nobody"); err != nil {
			t.Fatalf("running as root, and there is no user nobody to run Dovecot as: %v", err)
		}
		s.uid, _ = strconv.Atoi(runAs.Uid)
		s.gid, _ = strconv.Atoi(runAs.Gid)
		base = "/tmp" // root's TMPDIR may be private: nobody could not reach it
	}
	group, err := user.LookupGroupId(runAs.Gid)
	if err != nil {
		t.Fatal(err)
	}
	s.dir, err = os.MkdirTemp(base, "dovecot-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(s.dir) })
	for _, d := range []string{"", "run", "state", "mail", "home", "users"} {
		p := filepath.Join(s.dir, d)
		os.MkdirAll(p, 0o700)
		if err := s.chown(p); err != nil {
			t.Fatal(err)
		}
	}
	introspect := httptest.NewServer(http.HandlerFunc(s.introspect))
	t.Cleanup(introspect.Close)
	if err := s.writeFile("oauth2.conf", "introspection_mode = post\nintrospection_url = "+introspect.URL+"/introspect\n"+
		"username_attribute = username\nactive_attribute = active\nactive_value = true\n"); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
		if err := s.writeFile("dovecot.conf", s.config(port, runAs.Username, group.Name)); err != nil {
			t.Fatal(err)
		}
		err = s.launch(t)
		if err == nil {
			return s
		}
		if attempt == 3 {
			t.Fatalf("starting Dovecot: %v\n%s", err, s.output())
		}
	}
}

func (s *Server) writeFile(name, content string) error {
	p := filepath.Join(s.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		return err
	}
	return s.chown(p)
}

func (s *Server) config(port int, userName, groupName string) string {
	d := s.dir
	return fmt.Sprintf(`protocols = imap
listen = 127.0.0.1
base_dir = %[1]s/run
state_dir = %[1]s/state
instance_name = %[5]s
default_internal_user = %[3]s
default_internal_group = %[4]s
default_login_user = %[3]s
log_path = /dev/stderr
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login oauthbearer
mail_location = maildir:%[1]s/mail/%%u
passdb {
  driver = oauth2
  mechanisms = oauthbearer
  args = %[1]s/oauth2.conf
}
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%%u %[1]s/users/%%u
}
userdb {
  driver = static
  args = uid=%[3]s gid=%[4]s home=%[1]s/home/%%u
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = %[2]d
  }
  inet_listener imaps {
    port = 0
  }
}
service anvil {
  chroot =
}
service pop3-login {
  chroot =
}
service submission-login {
  chroot =
}
`, d, port, userName, groupName, filepath.Base(d))
}

type syncBuilder struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w syncBuilder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (s *Server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// launch starts the process and waits for its greeting.
func (s *Server) launch(t testing.TB) error {
	cmd := exec.Command(Binary, "-F", "-c", filepath.Join(s.dir, "dovecot.conf"))
	cmd.Stdout, cmd.Stderr = syncBuilder{&s.mu, s.out}, syncBuilder{&s.mu, s.out}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if s.uid >= 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid)}
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("dovecot exited")
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 512)
			n, _ := c.Read(buf)
			c.Close()
			if strings.Contains(string(buf[:n]), "ready") {
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("dovecot did not greet on %s within 30 s", s.Addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.cmd = cmd
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("Dovecot output:\n%s", s.output())
		}
	})
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func random() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// AddUser adds a user with a random password and returns both.
func (s *Server) AddUser(t testing.TB) (name, password string) {
	t.Helper()
	s.mu.Lock()
	name, password = "u"+random()[:8], random()
	s.users[name] = password
	s.mu.Unlock()
	// one passwd-file per user (the passdb's path names the user): a new user
	// is a new file, never a change Dovecot might not notice
	if err := s.writeFile(filepath.Join("users", name), name+":{PLAIN}"+password+"\n"); err != nil {
		t.Fatal(err)
	}
	return name, password
}

// AddToken makes token an OAUTHBEARER token of user (what the introspection
// endpoint answers active for).
func (s *Server) AddToken(user, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = user
}

// SetVerifier makes verify decide the tokens AddToken did not add: a relying
// party's check of real identity tokens.
func (s *Server) SetVerifier(verify func(token string) (user string, ok bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.verify = verify
}

func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	tok := r.PostForm.Get("token")
	s.mu.Lock()
	u, ok := s.tokens[tok]
	verify := s.verify
	s.mu.Unlock()
	if !ok && verify != nil {
		u, ok = verify(tok)
	}
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		json.NewEncoder(w).Encode(map[string]any{"active": false})
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"active": true, "username": u})
}

// Deliver appends a raw message to user's INBOX with its arrival time (as a
// delivery agent would), logging in with the user's password.
func (s *Server) Deliver(t testing.TB, userName string, raw []byte, received time.Time) {
	t.Helper()
	s.mu.Lock()
	pw := s.users[userName]
	s.mu.Unlock()
	c, err := client.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout()
	if err := c.Login(userName, pw); err != nil {
		t.Fatalf("deliver: login: %v", err)
	}
	if err := c.Append("INBOX", nil, received, literal(raw)); err != nil {
		t.Fatalf("deliver: append: %v", err)
	}
}

type lit struct{ *strings.Reader }

func (l lit) Len() int { return int(l.Size()) }

func literal(b []byte) imap.Literal { return lit{strings.NewReader(string(b))} }
