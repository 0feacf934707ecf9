package daemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/home"
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
	views map[string]*keptView
}

// NewKeyViews returns an empty cache.
func NewKeyViews() *KeyViews { return &KeyViews{views: map[string]*keptView{}} }

// keptView is a verified view and the form of it last saved in the daemon
// directory (nil: none).
type keptView struct {
	*audit.KeyView
	mu    sync.Mutex
	saved []byte
}

// ViewPath is where the daemon keeps the ledger view it verified, so that a
// one-shot command resumes from it instead of walking the whole chain.
func (d Dir) ViewPath() string { return filepath.Join(string(d), "ledger-view.json") }

// view returns the verified view of sess's broker: the one this daemon holds
// in memory (serve, mcp), else the one saved in the daemon directory under the
// same pins, else a new one from genesis. A saved view that cannot be read is
// ignored (it is only a cache: walking from genesis checks everything); one
// that reads resumes where it stopped and refuses a chain that does not
// extend it.
func (s Source) view(sess *Session, c *client.Client) *keptView {
	k := s.Keys
	if k == nil {
		return s.Dir.loadView(sess, c)
	}
	key := sess.Server + "|" + sess.Enclave.PlatformKey + "|" + sess.Enclave.LedgerKey
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.views[key]
	if !ok {
		v = s.Dir.loadView(sess, c)
		k.views[key] = v
	}
	return v
}

func (d Dir) loadView(sess *Session, c *client.Client) *keptView {
	if b, err := os.ReadFile(d.ViewPath()); err == nil {
		if v, err := audit.ResumeKeyView(c, sess.Enclave, b); err == nil {
			return &keptView{KeyView: v, saved: b}
		}
	}
	return &keptView{KeyView: audit.NewKeyView(c, sess.Enclave)}
}

// keep saves the view in the daemon directory (0600, atomically) when it moved
// since it was last saved. Only a view that reached the ledger's head is
// saved: call it after a check that synced.
func (d Dir) keep(v *keptView) {
	b, err := v.Save()
	if err != nil || b == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if bytes.Equal(b, v.saved) {
		return
	}
	if home.WriteFile(d.ViewPath(), b) == nil {
		v.saved = b
	}
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
	c, err := client.NewWith(sess.Server, brokerHTTP)
	if err != nil {
		return err
	}
	view := s.view(sess, c.WithClock(s.Now))
	_, err = view.VerifyToken(ctx, token, s.now())
	var rej *audit.Rejection
	if err == nil || errors.As(err, &rej) {
		s.Dir.keep(view)
	}
	switch {
	case err == nil:
		return nil
	case errors.As(err, &rej):
		return problem.Wrap(err, CodeDenied, "the issuer may be hijacked: tell the operator (agentkeys watchdog detects it); pass --chain-verified-oidc=false only for an issuer the ledger does not list",
			"%s: the identity token was not used: %s", DualVerifyRejected, rej.Reason)
	}
	p := problem.As(err)
	if p.Code == problem.LedgerInvalid {
		return problem.Wrap(err, CodeDenied, "the broker serves a chain that is not the one this daemon verified: check the broker URL and the network path; only if its operator restored the ledger from a backup, remove "+s.Dir.ViewPath()+" to verify it from genesis again",
			"%s: %s", DualVerifyRejected, p.Message)
	}
	code := CodeDenied
	if p.Code == problem.Unreachable || p.Code == problem.RateLimited {
		code = CodeUnreachable
	}
	return problem.Wrap(err, code, "retry; if it persists, check the broker URL and the network path",
		"%s: cannot check the token's key on the ledger: %s", DualVerifyRejected, p.Message)
}
