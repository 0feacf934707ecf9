package daemon

import (
	"errors"
	"os"
	"testing"

	"github.com/agentkeys/agentkeys/internal/dpop"
)

// TestSessionMemo: the parsed session is reused while its file is unchanged,
// and a new session file (pairing again) is loaded at the next call, as is a
// removed one (not paired) — the memo never answers for a file that changed.
func TestSessionMemo(t *testing.T) {
	d := Dir(t.TempDir())
	pk, err := dpop.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	key, err := EncodeKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	s := &Session{Server: "http://127.0.0.1:1", Token: "tok-1", ProofKey: key, Agent: "a1", Alias: "bot"}
	if err := d.SaveSession(s); err != nil {
		t.Fatal(err)
	}
	s1, a1, err := sessions.load(d)
	if err != nil || s1.Token != "tok-1" {
		t.Fatalf("first load: %+v, %v", s1, err)
	}
	s2, a2, err := sessions.load(d)
	if err != nil || s2.Token != "tok-1" || a2 != a1 {
		t.Fatalf("second load of the same file: %+v %v; want the memo (the same agent session client)", s2, err)
	}
	s2.Token = "changed by a caller"
	if s3, _, _ := sessions.load(d); s3.Token != "tok-1" {
		t.Fatalf("a caller's change to its copy reached the memo: %q", s3.Token)
	}
	// Pairing again writes a new file (same size, possibly the same second).
	s.Token, s.Agent = "tok-2", "a2"
	if err := d.SaveSession(s); err != nil {
		t.Fatal(err)
	}
	s4, a4, err := sessions.load(d)
	if err != nil || s4.Token != "tok-2" || s4.Agent != "a2" || a4 == a1 {
		t.Fatalf("after pairing again: %+v, %v; want the new session", s4, err)
	}
	if err := os.Remove(d.SessionPath()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sessions.load(d); !errors.Is(err, ErrNotPaired) {
		t.Fatalf("session file removed: %v, want ErrNotPaired", err)
	}
	// A damaged file is refused, not served from the memo.
	if err := os.WriteFile(d.SessionPath(), []byte(`{"server":"http://127.0.0.1:1","proof_key":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sessions.load(d); err == nil {
		t.Fatal("a damaged session file was accepted")
	}
}
