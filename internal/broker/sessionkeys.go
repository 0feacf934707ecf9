package broker

import (
	"context"

	"fmt"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
	"github.com/agentkeys/agentkeys/internal/token"
)

// sessionKeys mints and verifies session tokens with the keys the ledger's
// session-key registry names (§10.4): the newest issuer/jwt/vN signs new
// sessions; older versions verify the tokens they signed until their retire
// time, then no longer. It follows the ledger: a committed rotation marks it
// stale, and so does the next retire time passing; it then rebuilds its issuer
// from state. No one is logged out by a rotation.
type sessionKeys struct {
	enc    *enclave.Enclave
	issuer string
	now    func() time.Time
	state  func() (ledger.State, bool) // the committed state, once the ledger is open

	dirty atomic.Bool
	mu    sync.Mutex // serializes rebuilds
	cur   atomic.Pointer[sessionIssuer]
}

// sessionIssuer is one key set: the token issuer and when the earliest of its
// retiring keys is retired (0: none retiring).
type sessionIssuer struct {
	*token.Issuer
	retireAt int64
}

func newSessionKeys(enc *enclave.Enclave, issuer string, now func() time.Time, state func() (ledger.State, bool)) (*sessionKeys, error) {
	s := &sessionKeys{enc: enc, issuer: issuer, now: now, state: state}
	i, err := token.NewIssuer(enc, token.Options{Issuer: issuer, Current: "issuer/jwt/v1", Now: now})
	if err != nil {
		return nil, err
	}
	s.cur.Store(&sessionIssuer{Issuer: i})
	s.dirty.Store(true) // read the registry once the ledger is open
	return s, nil
}

// observe marks the key set stale when a rotation committed (Options.OnCommit).
func (s *sessionKeys) observe(es []ledger.Entry) {
	for i := range es {
		if es[i].Kind == registry.KindSessionKeyRotate {
			s.dirty.Store(true)
		}
	}
}

// get returns the key set in force, rebuilding it when stale.
func (s *sessionKeys) get() (*sessionIssuer, error) {
	cur := s.cur.Load()
	if !s.dirty.Load() && (cur.retireAt == 0 || s.now().Unix() < cur.retireAt) {
		return cur, nil
	}
	st, ok := s.state()
	if !ok { // not open yet: v1, as genesis has it
		return cur, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dirty.Store(false)
	ks, err := registry.SessionKeys(st)
	if err != nil {
		s.dirty.Store(true)
		return nil, err
	}
	now := s.now().Unix()
	o := token.Options{Issuer: s.issuer, Current: ks[len(ks)-1].Path, Now: s.now}
	next := &sessionIssuer{}
	for _, k := range ks[:len(ks)-1] {
		if k.Accepted(now) {
			o.Accepted = append(o.Accepted, k.Path)
			if next.retireAt == 0 || k.RetireAt < next.retireAt {
				next.retireAt = k.RetireAt
			}
		}
	}
	if next.Issuer, err = token.NewIssuer(s.enc, o); err != nil {
		s.dirty.Store(true)
		return nil, err
	}
	s.cur.Store(next)
	return next, nil
}

// Mint signs a new session token with the current key.
func (s *sessionKeys) Mint(c token.Claims) (string, token.Claims, error) {
	i, err := s.get()
	if err != nil {
		return "", token.Claims{}, err
	}
	return i.Mint(c)
}

// Verify checks a session token against every key not yet retired.
func (s *sessionKeys) Verify(tok string) (*token.Claims, error) {
	i, err := s.get()
	if err != nil {
		return nil, err
	}
	return i.Verify(tok)
}

// minSessionKeyWindow is the shortest time a rotated-out session key keeps
// verifying: the longest session lifetime plus a minute for a session minted
// while the rotation committed.
func (b *Broker) minSessionKeyWindow() time.Duration { return b.cfg.SessionTTL + time.Minute }

// checkSessionKeyRotate refuses a rotation whose window would retire the old
// key while sessions it signed are still valid: those owners would be logged out.
func (b *Broker) checkSessionKeyRotate(e ledger.Entry) error {
	var r registry.SessionKeyRotate
	if ledger.DecodeStrict(e.Payload, &r) != nil {
		return problem.New(problem.BadRequest, "a session.key.rotate payload is {\"window_seconds\": N}", "use agentkeys governance rotate-session-key")
	}
	if w := time.Duration(r.WindowSeconds) * time.Second; w < b.minSessionKeyWindow() {
		return problem.Newf(problem.BadRequest, fmt.Sprintf("pass --window %s or longer", b.minSessionKeyWindow()),
			"a window of %s would retire the old session key while sessions it signed are still valid (session lifetime %s)",
			w, b.cfg.SessionTTL)
	}
	return nil
}

// SessionKeys lists the session-token key versions, oldest first.
func (b *Broker) SessionKeys(ctx context.Context) ([]registry.SessionKey, error) {
	l, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	return registry.SessionKeys(l.State(ctx))
}

// SessionKeyList lists the session-token key versions for GET /v1/enclave,
// oldest first, with their kid, public key and state at now: current (signs new
// sessions), retiring (still verifies the sessions it signed) or retired.
// Before the ledger is open it is v1, as genesis has it.
func (b *Broker) SessionKeyList() ([]apiv1.SessionKeyInfo, error) {
	ks := []registry.SessionKey{{Version: 1, Path: "issuer/jwt/v1"}}
	if st, ok := b.committedState(); ok {
		var err error
		if ks, err = registry.SessionKeys(st); err != nil {
			return nil, err
		}
	}
	now := b.cfg.Now().Unix()
	out := make([]apiv1.SessionKeyInfo, 0, len(ks))
	for i, k := range ks {
		pub, err := b.enc.PublicKey(k.Path)
		if err != nil {
			return nil, err
		}
		state := "retired"
		switch {
		case i == len(ks)-1:
			state = "current"
		case k.Accepted(now):
			state = "retiring"
		}
		out = append(out, apiv1.SessionKeyInfo{Version: k.Version, Path: k.Path, Kid: pub.Kid, Public: pub.Public,
			State: state, ActiveFrom: k.ActiveFrom, RetireAt: k.RetireAt})
	}
	return out, nil
}
