package daemon

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// TestChecksCacheForTTL: a session check is asked of the broker once per TTL
// and per session; a failed check is not remembered.
func TestChecksCacheForTTL(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	k := NewChecks(5*time.Second, func() time.Time { return now })
	calls := 0
	answer, fail := []string{"oidc:*"}, error(nil)
	fetch := func() ([]string, error) {
		calls++
		return answer, fail
	}
	ask := func(sid string) ([]string, error) { return k.scopeOf(sid, fetch) }

	if sc, err := ask("s1"); err != nil || !slices.Equal(sc, answer) || calls != 1 {
		t.Fatalf("first check: %v %v, %d calls", sc, err, calls)
	}
	now = now.Add(4 * time.Second)
	if _, err := ask("s1"); err != nil || calls != 1 {
		t.Fatalf("a check 4 s later asked the broker again (%d calls, %v)", calls, err)
	}
	if _, err := ask("s2"); err != nil || calls != 2 {
		t.Fatalf("another session's check was answered from the cache (%d calls)", calls)
	}
	now = now.Add(5 * time.Second)
	fail = problem.New(problem.Revoked, "revoked", "pair again")
	if _, err := ask("s2"); !errors.Is(err, fail) || calls != 3 {
		t.Fatalf("a check after the TTL: %v, %d calls", err, calls)
	}
	if _, err := ask("s2"); !errors.Is(err, fail) || calls != 4 {
		t.Fatalf("a failed check was remembered: %v, %d calls", err, calls)
	}

	var none *Checks // nil asks every time
	if _, err := none.scopeOf("s1", fetch); err == nil || calls != 5 {
		t.Fatalf("nil Checks: %v, %d calls", err, calls)
	}
}

func TestS3Prefix(t *testing.T) {
	if p := S3Prefix("0xAbCdEF0123"); p != "0xabcdef0123/" {
		t.Fatalf("S3Prefix = %q", p)
	}
}
