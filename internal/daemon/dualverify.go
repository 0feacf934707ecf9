package daemon

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// DualVerifyRejected starts the message of every refusal by dual verification.
const DualVerifyRejected = "DualVerifyRejected"

// Metrics are the daemon's counters; daemon serve serves them at GET /metrics.
var Metrics = prometheus.NewRegistry()

var dualVerifyRejected = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "agentkeys_oidc_dual_verify_rejected_total",
	Help: "Identity tokens refused before use because the ledger's registry does not vouch for their key.",
})

func init() { Metrics.MustRegister(dualVerifyRejected) }

// KeyViews keeps one verified registry view per broker and pins, so a
// long-running daemon follows the chain instead of walking it for each token.
type KeyViews struct {
	mu    sync.Mutex
	views map[string]*audit.KeyView
}

// NewKeyViews returns an empty cache.
func NewKeyViews() *KeyViews { return &KeyViews{views: map[string]*audit.KeyView{}} }

func (k *KeyViews) view(sess *Session, c *client.Client) *audit.KeyView {
	if k == nil {
		return audit.NewKeyView(c, sess.Enclave)
	}
	key := sess.Server + "|" + sess.Enclave.PlatformKey + "|" + sess.Enclave.LedgerKey
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.views[key]
	if !ok {
		v = audit.NewKeyView(c, sess.Enclave)
		k.views[key] = v
	}
	return v
}

// DualVerify checks an identity token before anything uses it (§10.2): its kid
// must be active in the ledger's OIDC key registry, as the daemon verifies the
// chain itself under the enclave keys it pinned when it paired, and its
// signature must verify with that key. Anything else fails closed with
// DualVerifyRejected (DENIED; UNREACHABLE while the ledger cannot be read) and
// counts in agentkeys_oidc_dual_verify_rejected_total. Unverified skips it.
func (s Source) DualVerify(ctx context.Context, sess *Session, token string) error {
	if s.Unverified {
		return nil
	}
	err := s.dualVerify(ctx, sess, token)
	if err != nil {
		dualVerifyRejected.Inc()
	}
	return err
}

func (s Source) dualVerify(ctx context.Context, sess *Session, token string) error {
	if sess.Enclave.PlatformKey == "" || sess.Enclave.LedgerKey == "" {
		return problem.New(CodeDenied, DualVerifyRejected+": this daemon was paired before it pinned the broker's enclave, so it cannot check the ledger's key registry",
			"pair again (agentkeys daemon pair), or pass --chain-verified-oidc=false for an issuer the ledger does not list")
	}
	c, err := client.New(sess.Server)
	if err != nil {
		return err
	}
	_, err = s.Keys.view(sess, c.WithClock(s.Now)).VerifyToken(ctx, token, s.now())
	var rej *audit.Rejection
	switch {
	case err == nil:
		return nil
	case errors.As(err, &rej):
		return problem.Wrap(err, CodeDenied, "the issuer may be hijacked: tell the operator (agentkeys watchdog detects it); pass --chain-verified-oidc=false only for an issuer the ledger does not list",
			"%s: the identity token was not used: %s", DualVerifyRejected, rej.Reason)
	}
	p := problem.As(err)
	code := CodeDenied
	if p.Code == problem.Unreachable || p.Code == problem.RateLimited {
		code = CodeUnreachable
	}
	return problem.Wrap(err, code, "retry; if it persists, check the broker URL and the network path",
		"%s: cannot check the token's key on the ledger: %s", DualVerifyRejected, p.Message)
}
