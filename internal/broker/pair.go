package broker

// Pairing (§6): a daemon's signed request, the owner's pending view and signed
// decision, and the daemon's poll that collects the sealed session.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/seal"
	"github.com/agentkeys/agentkeys/internal/token"
)

// MaxPairTTL bounds how long a pair request can wait for the owner.
const MaxPairTTL = time.Hour

// PairPrivatePath is the enclave key that seals a pair request's private
// fields (its VVC nonce, signature and source address) on the ledger.
const PairPrivatePath = "pair/vvc/v1"

func badPair(format string, args ...any) error {
	return problem.Newf(problem.BadRequest, "run agentkeys daemon pair again; check --owner, --alias and --scope", "pair request refused: "+format, args...)
}

// RequestPairing files a daemon's signed pair request (§6 step 1). It is not
// authenticated: the signature proves possession of the proof key, the API admits
// the request per source address and in all (Admit) before reading it, and
// nothing happens until the owner approves. Nothing here is keyed by what the
// caller wrote before it is validated.
func (b *Broker) RequestPairing(ctx context.Context, r apiv1.PairRequest, source string) (*apiv1.PairCreated, error) {
	lg, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	now := b.cfg.Now()
	if !apiv1.ValidName(r.Alias) {
		return nil, badPair("alias %q must be 1-63 lowercase letters, digits, '.', '_' or '-'", r.Alias)
	}
	if err := agent.CheckScope(r.Scope); err != nil {
		return nil, badPair("scope: %v", err)
	}
	if r.TTLSeconds < 0 || r.TTLSeconds > int64(b.cfg.SessionTTL/time.Second) { // in seconds: a Duration would overflow
		return nil, badPair("ttl_seconds must be 0 (default) to %d", int64(b.cfg.SessionTTL.Seconds()))
	}
	jkt, err := apiv1.VerifyPairRequest(r)
	if err != nil {
		return nil, badPair("%v", err)
	}
	hpkePub, err := base64.StdEncoding.DecodeString(r.HPKEPublic)
	if err != nil {
		return nil, badPair("hpke_public is not base64")
	}
	if _, err := seal.To(hpkePub, []byte("agentkeys/pair-check/v1"), nil); err != nil {
		return nil, badPair("hpke_public is not a hybrid ML-KEM-768+X25519 public key")
	}
	until := time.Unix(r.ValidUntil, 0)
	if r.ValidUntil == 0 {
		until = now.Add(b.cfg.PairTTL)
	}
	if !until.After(now) {
		return nil, badPair("valid_until is in the past (check the daemon's clock)")
	}
	if limit := now.Add(MaxPairTTL); until.After(limit) {
		until = limit
	}
	st := lg.State(ctx)
	owner, err := b.resolveOwner(st, r.Owner)
	if err != nil {
		return nil, err
	}
	if other, ok, err := agent.PendingAlias(st, owner, r.Alias, now.Unix()); err != nil {
		return nil, err
	} else if ok {
		return nil, aliasPending(r.Alias, other.Expires-now.Unix())
	}
	// The VVC nonce is drawn now, after the signed request and its keys arrived:
	// the requester cannot choose or grind the VVC. It goes on the ledger sealed.
	nonce := make([]byte, apiv1.VVCNonceSize)
	rand.Read(nonce)
	id := randomID()[:16]
	priv, _ := json.Marshal(agent.PairPrivate{Nonce: hex.EncodeToString(nonce), Sig: r.Sig, Source: source})
	box, err := b.enc.SealPrivate(PairPrivatePath, agent.PrivateContext(id, owner), priv)
	if err != nil {
		return nil, err
	}
	p := agent.Pair{ID: id, Owner: owner, Alias: r.Alias, Scope: r.Scope, TTLSeconds: r.TTLSeconds,
		ProofJWK: r.ProofJWK, JKT: jkt, HPKEPublic: r.HPKEPublic, Sealed: base64.StdEncoding.EncodeToString(box), Expires: until.Unix()}
	if p.Scope == nil {
		p.Scope = []string{}
	}
	if err := b.admitGlobal(AnonPair); err != nil {
		return nil, err
	}
	if _, err := lg.Append(ctx, ledger.OriginEnclave, agent.KindPairRequested, p); err != nil {
		if errors.Is(err, agent.ErrAliasPending) { // lost a race with another request for the alias
			return nil, aliasPending(r.Alias, -1)
		}
		return nil, ledgerProblem(err)
	}
	return &apiv1.PairCreated{ID: p.ID, VVC: apiv1.VVC(nonce, r.Sig), Nonce: hex.EncodeToString(nonce),
		Fingerprint: apiv1.Fingerprint(jkt), ExpiresAt: p.Expires}, nil
}

// aliasPending refuses a second pending request for one owner and alias that
// expires in expiresIn seconds (negative: not known).
func aliasPending(alias string, expiresIn int64) error {
	when := ""
	if expiresIn >= 0 {
		when = fmt.Sprintf(" (in %d s)", expiresIn)
	}
	return problem.Newf(problem.Conflict,
		"the owner denies the other request (agentkeys agent pending, then agentkeys agent deny ID) or it expires"+when+"; then run agentkeys daemon pair again",
		"pair request refused: the owner already has a pending pair request for alias %q", alias)
}

// pairView opens a request's sealed fields for its owner's view. Requests of
// older brokers (VVC in the clear, no nonce) cannot be viewed or decided: they
// expire within MaxPairTTL and the daemon pairs again.
func (b *Broker) pairView(p *agent.Pair) (*apiv1.PendingPair, error) {
	if p.Sealed == "" {
		return nil, problem.Newf(problem.Conflict, "ask the daemon to run agentkeys daemon pair again",
			"pair request %s was made by an older broker and cannot be decided", p.ID)
	}
	box, err := base64.StdEncoding.DecodeString(p.Sealed)
	if err != nil {
		return nil, fmt.Errorf("pair %s: sealed fields: %w", p.ID, err)
	}
	raw, err := b.enc.OpenPrivate(PairPrivatePath, agent.PrivateContext(p.ID, p.Owner), box)
	if err != nil {
		return nil, fmt.Errorf("pair %s: %w", p.ID, err)
	}
	var priv agent.PairPrivate
	if err := json.Unmarshal(raw, &priv); err != nil {
		return nil, fmt.Errorf("pair %s: sealed fields: %w", p.ID, err)
	}
	nonce, err := hex.DecodeString(priv.Nonce)
	if err != nil || len(nonce) != apiv1.VVCNonceSize {
		return nil, fmt.Errorf("pair %s: sealed nonce is not %d bytes", p.ID, apiv1.VVCNonceSize)
	}
	h := apiv1.VVCHash(nonce, priv.Sig)
	return &apiv1.PendingPair{ID: p.ID, Alias: p.Alias, Scope: p.Scope, TTLSeconds: p.TTLSeconds, VVC: apiv1.VVCDigits(h),
		VVCHash: hex.EncodeToString(h[:]), Fingerprint: apiv1.Fingerprint(p.JKT), JKT: p.JKT, Source: priv.Source,
		CreatedAt: p.Created / 1e9, ExpiresAt: p.Expires}, nil
}

// resolveOwner maps --owner (omni or wallet address) to an owner's omni.
func (b *Broker) resolveOwner(st ledger.State, owner string) (string, error) {
	notFound := problem.Newf(problem.NotFound, "ask the owner for their omni or wallet (agentkeys whoami)", "no owner account %q on this broker", owner)
	omni := strings.ToLower(owner)
	if strings.HasPrefix(omni, "0x") {
		o, ok, err := account.ByWallet(st, omni)
		if err != nil {
			return "", err
		}
		if !ok {
			return "", notFound
		}
		omni = o
	}
	if !ledger.ValidOmni(omni) {
		return "", notFound
	}
	a, err := account.Get(st, omni)
	if errors.Is(err, account.ErrNoAccount) || (err == nil && a.Role != token.RoleOwner) {
		return "", notFound
	} else if err != nil {
		return "", err
	}
	return omni, nil
}

// PendingPairs lists the owner's pair requests that can still be approved.
func (b *Broker) PendingPairs(ctx context.Context, c *Caller) ([]apiv1.PendingPair, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	all, err := agent.Pairs(lg.State(ctx), c.Omni())
	if err != nil {
		return nil, err
	}
	now := b.cfg.Now().Unix()
	out := []apiv1.PendingPair{}
	for _, p := range all {
		if p.Status != apiv1.PairPending || now > p.Expires || p.Sealed == "" {
			continue
		}
		v, err := b.pairView(&p)
		if err != nil {
			return nil, err
		}
		out = append(out, *v)
	}
	return out, nil
}

// pendingFor finds the owner's pending, unexpired request id and checks the
// decision statement.
func (b *Broker) pendingFor(ctx context.Context, c *Caller, id, decision string, d apiv1.Decision) (*agent.Pair, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	p, ok, err := agent.GetPair(lg.State(ctx), c.Omni(), id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, problem.Newf(problem.NotFound, "list pending requests with agentkeys agent pending", "no pair request %q", id)
	}
	if p.Status != apiv1.PairPending {
		return nil, problem.Newf(problem.Conflict, "ask the daemon to run agentkeys daemon pair again", "pair request %s is already %s", id, p.Status)
	}
	if b.cfg.Now().Unix() > p.Expires {
		return nil, problem.Newf(problem.Denied, "ask the daemon to run agentkeys daemon pair again", "pair request %s has expired", id)
	}
	v, err := b.pairView(p)
	if err != nil {
		return nil, err
	}
	pub, err := hex.DecodeString(c.Account.PublicKey)
	sig, serr := hex.DecodeString(d.Sig)
	if err != nil || serr != nil || len(pub) != ed25519.PublicKeySize ||
		!ed25519.Verify(pub, apiv1.DecisionMessage(b.cfg.Issuer, id, v.VVCHash, decision, d.Time), sig) {
		return nil, problem.New(problem.Denied, "the decision is not signed by your identity key", "approve or deny from the owner's CLI (agentkeys agent approve)")
	}
	if dt := b.cfg.Now().Sub(time.Unix(d.Time, 0)); dt > LoginSkew || dt < -LoginSkew {
		return nil, problem.New(problem.Denied, "the decision's time is more than 5 minutes from the broker's clock", "check the machine clock")
	}
	return p, nil
}

// ApprovePairing approves a pair request (§6 step 4): the next generation of the
// alias gets a fresh omni and wallet, an agent account, a session bound to the
// daemon's proof key, and its token and channel key sealed to the daemon's HPKE
// key. The plaintext token exists only in this call.
func (b *Broker) ApprovePairing(ctx context.Context, c *Caller, id string, d apiv1.Decision) (*agent.Agent, error) {
	p, err := b.pendingFor(ctx, c, id, "approve", d)
	if err != nil {
		return nil, err
	}
	lg, _ := b.Ledger()
	owner := c.Omni()
	prev, had, err := agent.Get(lg.State(ctx), owner, p.Alias)
	if err != nil {
		return nil, err
	}
	gen := 1
	if had {
		gen = prev.Generation + 1
	}
	omni := account.AgentOmni(owner, p.Alias, gen)
	wallet, err := b.enc.WalletAddress(omni)
	if err != nil {
		return nil, err
	}
	ttl := b.cfg.AgentTTL
	if p.TTLSeconds > 0 {
		ttl = min(time.Duration(p.TTLSeconds)*time.Second, b.cfg.SessionTTL)
	}
	sid := randomID()
	exp := b.cfg.Now().Add(ttl).Unix()
	tok, _, err := b.tokens.Mint(token.Claims{Subject: omni, SessionID: sid, Role: token.RoleAgent, Expiry: exp,
		Parent: owner, Cnf: &token.Cnf{JKT: p.JKT}})
	if err != nil {
		return nil, err
	}
	hpkePub, err := base64.StdEncoding.DecodeString(p.HPKEPublic)
	if err != nil {
		return nil, err
	}
	sealedTok, err := seal.To(hpkePub, []byte(apiv1.TokenInfo(p.ID)), []byte(tok))
	if err != nil {
		return nil, err
	}
	chInfo := "agentkeys/channel/v1|" + sid
	sealedCh, err := b.enc.SessionKeyTo(sid, hpkePub, []byte(chInfo))
	if err != nil {
		return nil, err
	}
	bundle, _ := json.Marshal(agent.SealedBundle{SealedToken: base64.StdEncoding.EncodeToString(sealedTok),
		SealedChannelKey: base64.StdEncoding.EncodeToString(sealedCh)})
	sum := sha256.Sum256(bundle)
	dl := agent.DeliveryRecord{Agent: omni, Wallet: wallet, SID: sid, Generation: gen, ExpiresAt: exp,
		ChannelInfo: chInfo, Sealed: hex.EncodeToString(sum[:])}
	ap := agent.Approval{ID: p.ID, Owner: owner, Alias: p.Alias, Scope: p.Scope, Statement: d.Sig, Time: d.Time, Delivery: dl}
	acct := account.Account{Omni: omni, Wallet: wallet, Type: "agent", Role: token.RoleAgent, Parent: owner, Alias: p.Alias, Generation: gen}
	s := account.Session{SID: sid, Omni: omni, Role: token.RoleAgent, Expires: exp}
	// One atomic group: a crash can never leave an approval without its agent or
	// session (which would strand the request).
	if _, err := lg.AppendAll(ctx, []ledger.Req{
		{Origin: ledger.AccountOrigin(owner), Kind: agent.KindPairApproved, Payload: ap, Blob: bundle},
		{Origin: ledger.OriginEnclave, Kind: account.KindCreated, Payload: acct},
		{Origin: ledger.AccountOrigin(omni), Kind: account.KindSessionIssued, Payload: s},
	}); err != nil {
		if errors.Is(err, ledger.ErrRejected) {
			return nil, problem.Newf(problem.Conflict, "list pending requests with agentkeys agent pending", "pair request %s can no longer be approved", id)
		}
		return nil, ledgerProblem(err)
	}
	if had && prev.Status == apiv1.AgentActive {
		// The old generation's token already fails (its omni is no longer the
		// agent's); record the revocation too, so the index and the trail say so.
		b.revokeSession(ctx, owner, prev.SID, "re-paired as generation "+strconv.Itoa(gen))
	}
	b.log.Info("agent paired", "owner", owner, "alias", p.Alias, "generation", gen, "agent", omni)
	a, _, err := agent.Get(lg.State(ctx), owner, p.Alias)
	return a, err
}

// DenyPairing denies a pair request.
func (b *Broker) DenyPairing(ctx context.Context, c *Caller, id string, d apiv1.Decision) error {
	p, err := b.pendingFor(ctx, c, id, "deny", d)
	if err != nil {
		return err
	}
	lg, _ := b.Ledger()
	_, err = lg.Append(ctx, ledger.AccountOrigin(c.Omni()), agent.KindPairDenied,
		agent.Denial{ID: p.ID, Owner: c.Omni(), Statement: d.Sig, Time: d.Time})
	if errors.Is(err, ledger.ErrRejected) {
		return problem.Newf(problem.Conflict, "list pending requests with agentkeys agent pending", "pair request %s can no longer be denied", id)
	}
	return ledgerProblem(err)
}

// PollPairing answers a daemon's poll. The request carries a DPoP proof signed
// by the request's own proof key, so only its daemon learns the outcome.
func (b *Broker) PollPairing(ctx context.Context, id string, pr Proof) (*apiv1.PairStatus, error) {
	lg, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	st := lg.State(ctx)
	p, ok, err := agent.FindPair(st, id)
	if err != nil {
		return nil, err
	}
	notFound := problem.Newf(problem.NotFound, "pair again with agentkeys daemon pair", "no pair request %q", id)
	if !ok {
		return nil, notFound
	}
	if err := b.checkProof(pr, p.JKT, ""); err != nil {
		return nil, err
	}
	out := &apiv1.PairStatus{ID: p.ID, Status: p.Status, Alias: p.Alias, Scope: p.Scope, ExpiresAt: p.Expires}
	switch {
	case p.Status == apiv1.PairPending && b.cfg.Now().Unix() > p.Expires:
		out.Status = apiv1.PairExpired
	case p.Status == apiv1.PairApproved && p.Delivery != nil:
		// Delivered only once the agent's session is on the ledger.
		if _, ok, err := account.GetSession(st, p.Delivery.SID); err != nil {
			return nil, err
		} else if !ok {
			out.Status = apiv1.PairPending
		} else {
			var sb agent.SealedBundle
			if ok, err := ledger.GetJSON(st, ledger.BlobKey(p.Delivery.Sealed), &sb); err != nil || !ok {
				return nil, fmt.Errorf("pair %s: sealed delivery missing: %v", p.ID, err)
			}
			d := p.Delivery
			out.Delivery = &apiv1.Delivery{Agent: d.Agent, Wallet: d.Wallet, SID: d.SID, Generation: d.Generation, ExpiresAt: d.ExpiresAt,
				SealedToken: sb.SealedToken, SealedChannelKey: sb.SealedChannelKey, ChannelInfo: d.ChannelInfo}
		}
	}
	return out, nil
}
