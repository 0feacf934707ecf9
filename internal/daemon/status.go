package daemon

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// States of a paired daemon's session, as the broker sees it.
const (
	StatePaired      = "paired"      // the broker accepts the session
	StateRevoked     = "revoked"     // the owner revoked or tore down the agent, or re-paired its alias
	StateExpired     = "expired"     // the session's lifetime is over
	StateUnreachable = "unreachable" // the broker could not be asked
)

// Status is what the broker says about the daemon's session.
type Status struct {
	State   string
	Session *Session       // the local pairing (never print its secrets)
	Whoami  *apiv1.Whoami  // the broker's answer, when paired
	Problem *problem.Error // why, when not paired
}

// S3Prefix is the object prefix of an agent wallet that relying parties see
// (the bucket policy's ${aws:PrincipalTag/agentkeys_user_wallet}/): the
// wallet in lower case.
func S3Prefix(wallet string) string { return strings.ToLower(wallet) + "/" }

// Status asks the broker about the paired session (GET /v1/whoami with the
// agent session and a proof). A session past its expiry is expired without a
// round trip. It fails only when the daemon is not paired or its session file
// is damaged.
func (s Source) Status(ctx context.Context) (*Status, error) {
	sess, c, err := s.agent()
	if err != nil {
		return nil, Stable(err)
	}
	st := &Status{Session: sess}
	if s.now().Unix() >= sess.ExpiresAt {
		st.State, st.Problem = StateExpired, errExpired
		return st, nil
	}
	w, err := c.Whoami(ctx)
	if err == nil {
		st.State, st.Whoami = StatePaired, w
		return st, nil
	}
	st.Problem = problem.As(err)
	switch st.Problem.Code {
	case problem.Revoked, problem.Unauthenticated:
		st.State = StateRevoked
		if s.now().Unix() >= sess.ExpiresAt {
			st.State, st.Problem = StateExpired, errExpired
		}
	default:
		st.State = StateUnreachable
	}
	return st, nil
}

var errExpired = problem.New(CodeRevoked, "the agent's session has expired", "ask the owner to pair this daemon again (agentkeys daemon pair)")

// Checks remembers for a short while which sessions the broker accepted, and
// their scope, so that a daemon serving cloud credentials from its cache asks
// the broker at most once per TTL. It is safe for concurrent use; a nil
// *Checks asks every time.
type Checks struct {
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	sid   string
	at    time.Time
	scope []string
}

// DefaultCheckTTL is how long a long-running daemon trusts the broker's last
// answer about its session: a revoked agent stops getting cached cloud
// credentials at most this late.
const DefaultCheckTTL = 5 * time.Second

// NewChecks returns a cache of session checks that trusts an answer for ttl.
func NewChecks(ttl time.Duration, now func() time.Time) *Checks {
	return &Checks{ttl: ttl, now: now}
}

// scopeOf returns the scope of session sid: the remembered one while it is
// fresh, else fetch's answer, which is remembered on success only.
func (k *Checks) scopeOf(sid string, fetch func() ([]string, error)) ([]string, error) {
	if k == nil {
		return fetch()
	}
	k.mu.Lock()
	if k.sid == sid && k.now().Sub(k.at) < k.ttl {
		sc := k.scope
		k.mu.Unlock()
		return sc, nil
	}
	k.mu.Unlock()
	sc, err := fetch()
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.sid, k.at, k.scope = sid, k.now(), sc
	k.mu.Unlock()
	return sc, nil
}

// checkCloud asks the broker (or s.Checks) whether the session may still get
// identity tokens for audience, before cached cloud credentials are served: a
// revoked agent gets REVOKED, an agent whose scope lost the audience DENIED,
// and when the broker cannot answer, UNREACHABLE (nothing is served unchecked).
func (s Source) checkCloud(ctx context.Context, sess *Session, c *client.AgentSession, audience string) error {
	if s.now().Unix() >= sess.ExpiresAt {
		return errExpired
	}
	scope, err := s.Checks.scopeOf(sess.SID, func() ([]string, error) {
		w, err := c.Whoami(ctx)
		if err != nil {
			return nil, err
		}
		return w.Scope, nil
	})
	if err != nil {
		p := Stable(err)
		if p.Code == CodeUnreachable {
			p.Fix = "the daemon serves cached cloud credentials only while the broker confirms its session; " + p.Fix
		}
		return p
	}
	if !apiv1.AllowsOIDC(scope, audience) {
		return problem.Newf(CodeDenied, "the owner allows it with: agentkeys agent scope "+sess.Alias+" --add oidc:"+audience,
			"this agent's scope no longer allows identity tokens for %q", audience)
	}
	return nil
}
