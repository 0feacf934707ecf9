package daemon

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// NewPairRequest sends a pair request to the broker at server (SendPairRequest)
// and stores it, with its keys, as pending in d.
func (d Dir) NewPairRequest(ctx context.Context, server, owner, alias string, scope []string, ttl, wait time.Duration, platformPin string) (*Pending, error) {
	c, err := client.New(server)
	if err != nil {
		return nil, err
	}
	p, err := SendPairRequest(ctx, c, owner, alias, scope, ttl, wait, platformPin)
	if err != nil {
		return nil, err
	}
	return p, d.SavePending(p)
}

// SendPairRequest makes a daemon's keys, sends its signed pair request through c
// and checks the broker's VVC and fingerprint; it stores nothing. First it
// verifies the broker's enclave quote, under platformPin (hex) when given, else
// under the platform key the quote names, and pins what it attests.
func SendPairRequest(ctx context.Context, c *client.Client, owner, alias string, scope []string, ttl, wait time.Duration, platformPin string) (*Pending, error) {
	if scope == nil {
		scope = []string{}
	}
	// Pin the enclave first (§10.2): its attested ledger key is what the
	// daemon later checks the OIDC key registry under.
	pins, err := audit.Attest(ctx, c, platformPin)
	if err != nil {
		return nil, err
	}
	proof, err := dpop.NewKey()
	if err != nil {
		return nil, err
	}
	hk, err := NewHPKEKey()
	if err != nil {
		return nil, err
	}
	jwk, err := dpop.PublicJWK(proof)
	if err != nil {
		return nil, err
	}
	r := apiv1.PairRequest{Owner: owner, Alias: alias, Scope: scope, TTLSeconds: int64(ttl.Seconds()), ProofJWK: string(jwk),
		HPKEPublic: base64.StdEncoding.EncodeToString(hk.PublicKey().Bytes()), ValidUntil: c.Now().Add(wait).Unix()}
	if err := apiv1.SignPairRequest(&r, proof); err != nil {
		return nil, err
	}
	res, err := c.RequestPairing(ctx, r)
	if err != nil {
		return nil, err
	}
	// The VVC is ours to compute: the broker's nonce over our own signature. A
	// broker that sends no nonce (an old one) would leave the VVC grindable.
	nonce, err := hex.DecodeString(res.Nonce)
	if err != nil || len(nonce) != apiv1.VVCNonceSize {
		return nil, problem.New(problem.Denied, "the broker sent no VVC nonce, so its VVC could have been chosen by anyone",
			"upgrade the broker; do not approve this request")
	}
	_, jkt, err := dpop.ParseJWK(jwk)
	if err != nil {
		return nil, err
	}
	if res.VVC != apiv1.VVC(nonce, r.Sig) || res.Fingerprint != apiv1.Fingerprint(jkt) {
		return nil, problem.New(problem.Denied, "the broker's VVC or key fingerprint differs from the one computed here: the request was altered", "check --server; do not approve this request")
	}
	pk, err := EncodeKey(proof)
	if err != nil {
		return nil, err
	}
	hb, err := hk.Bytes()
	if err != nil {
		return nil, err
	}
	return &Pending{Server: c.Server(), Owner: owner, Alias: alias, Scope: scope, ID: res.ID, VVC: res.VVC,
		Fingerprint: res.Fingerprint, ExpiresAt: res.ExpiresAt, ProofKey: pk, HPKEPrivate: base64.StdEncoding.EncodeToString(hb), Enclave: pins}, nil
}

// WaitPairing polls the broker until the owner decides on p. Approved, it
// completes the pairing (Complete); denied or expired, it removes p and says so.
// It calls tick about every second while it waits, for a caller that shows the
// time left.
func (d Dir) WaitPairing(ctx context.Context, p *Pending, tick func()) (*Session, error) {
	c, err := client.New(p.Server)
	if err != nil {
		return nil, err
	}
	key, err := DecodeKey(p.ProofKey)
	if err != nil {
		return nil, err
	}
	interval := 500 * time.Millisecond
	for {
		st, err := c.PollPairing(ctx, p.ID, key)
		if err != nil {
			if pe := problem.As(err); pe.Code != problem.Unreachable && pe.Code != problem.RateLimited {
				return nil, err
			}
		} else {
			switch st.Status {
			case apiv1.PairApproved:
				return d.Complete(p, st.Delivery)
			case apiv1.PairDenied:
				d.RemovePending(p.ID)
				return nil, problem.Newf(problem.Denied, "ask the owner, then pair again", "the owner denied pair request %s", p.ID)
			case apiv1.PairExpired:
				d.RemovePending(p.ID)
				return nil, problem.Newf(problem.Denied, "pair again, and have the owner approve within the time shown", "pair request %s expired before the owner approved it", p.ID)
			}
		}
		for next := time.Now().Add(interval); time.Now().Before(next); {
			tick()
			select {
			case <-ctx.Done():
				return nil, problem.Newf(problem.Unreachable, "resume with agentkeys daemon pair --resume "+p.ID, "stopped waiting for pair request %s", p.ID)
			case <-time.After(min(time.Second, time.Until(next))):
			}
		}
		interval = min(interval*3/2, 3*time.Second)
	}
}
