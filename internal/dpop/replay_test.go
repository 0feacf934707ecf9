package dpop_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/dpop/replaytest"
)

func TestMemoryReplaysConformance(t *testing.T) {
	replaytest.Run(t, func(t *testing.T) replaytest.Opener {
		s := dpop.NewMemoryReplays(0)
		return func() dpop.ReplayStore { return s }
	})
}

// TestSharedVerifiersRefuseReplays: two verifiers (two brokers) on one store: a
// proof one accepted is a replay to the other.
func TestSharedVerifiersRefuseReplays(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	store := dpop.NewMemoryReplays(0)
	a, b := dpop.NewSharedVerifier(store, clock), dpop.NewSharedVerifier(store, clock)
	now = now.Add(time.Second) // after both started
	k, _ := dpop.NewKey()
	jkt, _ := dpop.Thumbprint(&k.PublicKey)
	const url = "https://broker.example/v1/agent/credentials"
	w := dpop.Want{Method: "GET", URLs: []string{url}, JKT: jkt}
	p, err := dpop.Sign(k, "GET", url, "", now)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Verify(p, w); err != nil {
		t.Fatal(err)
	}
	if err := b.Verify(p, w); !errors.Is(err, dpop.ErrReplayed) {
		t.Fatalf("a proof accepted by one verifier, sent to the other: %v, want ErrReplayed", err)
	}
}

type brokenStore struct{ err error }

func (s brokenStore) First(context.Context, dpop.ProofID, time.Time, time.Time) (bool, error) {
	return false, s.err
}

// TestReplayStoreFailureRefuses: a store that cannot answer refuses the proof
// (fail closed), and the refusal's text does not carry the store's error.
func TestReplayStoreFailureRefuses(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	cause := errors.New("dial tcp db.internal:5432: password authentication failed for user broker")
	v := dpop.NewSharedVerifier(brokenStore{cause}, func() time.Time { return now })
	now = now.Add(time.Second)
	k, _ := dpop.NewKey()
	jkt, _ := dpop.Thumbprint(&k.PublicKey)
	const url = "https://broker.example/v1/agent/credentials"
	p, _ := dpop.Sign(k, "GET", url, "", now)
	err := v.Verify(p, dpop.Want{Method: "GET", URLs: []string{url}, JKT: jkt})
	if !errors.Is(err, dpop.ErrReplayStore) || !errors.Is(err, dpop.ErrInvalid) || !errors.Is(err, cause) {
		t.Fatalf("a failing replay store: %v, want ErrReplayStore wrapping the cause", err)
	}
	if strings.Contains(err.Error(), "db.internal") || strings.Contains(err.Error(), "password") {
		t.Fatalf("the refusal shows the store's error: %q", err)
	}
}
