package cli

import (
	"bufio"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/mlkem"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/home"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/seal"
)

// DefaultServer is the broker `agentkeys server` runs with no flags.
const DefaultServer = "http://127.0.0.1:8090"

func (e *env) dir() (home.Dir, error) {
	if err := home.CheckStore(e.getenv("AGENTKEYS_SESSION_STORE")); err != nil {
		return "", problem.New(problem.BadRequest, err.Error(), "unset AGENTKEYS_SESSION_STORE or set it to file")
	}
	return home.Dir(e.home()), nil
}

// ownerSession loads the stored owner session and a client bound to it.
func (e *env) ownerSession() (*home.Session, *client.Session, error) {
	d, err := e.dir()
	if err != nil {
		return nil, nil, err
	}
	s, err := d.Session()
	if errors.Is(err, home.ErrMissing) {
		return nil, nil, problem.New(problem.Unauthenticated, "this machine has no AgentKeys session", "run agentkeys init --server URL")
	} else if err != nil {
		return nil, nil, err
	}
	if s.Token == "" {
		return nil, nil, problem.Newf(problem.Unauthenticated, "log in again with agentkeys init",
			"this machine is logged out of %s", s.Server)
	}
	c, err := client.New(s.Server)
	if err != nil {
		return nil, nil, err
	}
	return s, c.WithToken(s.Token), nil
}

// attestedShielding is client.AttestedShielding: the enclave's shielding key,
// its quote checked under the pinned platform key.
var attestedShielding = client.AttestedShielding

// readSecret reads a secret from a file or stdin (never argv). One trailing
// newline is removed, so `echo sk-... | agentkeys store x` stores what was typed.
func (e *env) readSecret(fromFile string) ([]byte, error) {
	var b []byte
	var err error
	switch {
	case fromFile != "":
		b, err = os.ReadFile(fromFile)
	case isTerminal(e.stdin):
		fmt.Fprint(e.stderr, "Secret (input hidden): ")
		b, err = term.ReadPassword(int(e.stdin.(*os.File).Fd()))
		fmt.Fprintln(e.stderr)
	default:
		b, err = io.ReadAll(io.LimitReader(e.stdin, 1<<20))
	}
	if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, "pass the secret on stdin or with --from-file PATH", "cannot read the secret: %v", err)
	}
	b = []byte(strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"))
	if len(b) == 0 {
		return nil, problem.New(problem.BadRequest, "the secret is empty", "pipe it in: agentkeys store SERVICE < file, or use --from-file")
	}
	return b, nil
}

// isTerminal reports whether stream (stdin, stdout or stderr) is a terminal.
func isTerminal(stream any) bool {
	f, ok := stream.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// confirm asks a yes/no question on a terminal; off a terminal it needs --yes.
func (e *env) confirm(question string) (bool, error) {
	if !isTerminal(e.stdin) {
		return false, problem.New(problem.BadRequest, "confirmation needed but stdin is not a terminal", "pass --yes")
	}
	fmt.Fprintf(e.stderr, "%s [y/N] ", question)
	line, _ := bufio.NewReader(e.stdin).ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes", nil
}

// newHPKEKey makes a one-time hybrid ML-KEM-768 + X25519 key for receiving a secret.
func newHPKEKey() (hpke.PrivateKey, error) {
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		return nil, err
	}
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return hpke.NewHybridPrivateKey(dk, x)
}

func openFor(k hpke.PrivateKey, info string, sealed []byte) ([]byte, error) {
	return seal.Open(k, []byte(info), sealed)
}

func expiry(unix int64) string { return time.Unix(unix, 0).UTC().Format(time.RFC3339) }

// jsonOut prints v as one line of JSON (the --json output of a command).
func (e *env) jsonOut(v any) error { return json.NewEncoder(e.stdout).Encode(v) }
