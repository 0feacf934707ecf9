package broker

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/dkimsig"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/mail"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// DKIM signing of the agents' mail (§9). The daemon builds the message and
// sends the canonical header block and the body hash; the broker checks that
// the agent holds send on the From inbox, audits, and has the enclave sign
// with the domain's Ed25519 key (dkim/<domain>/v1) and its RSA key (a key box
// on the ledger, mail.dkim.rsa). The body never reaches the broker.

// newDKIMRSA has the enclave generate domain's RSA key and returns the
// enclave-origin entry that records it, in owner's trail.
func (b *Broker) newDKIMRSA(owner, domain string) (ledger.Req, error) {
	box, pub, err := b.enc.NewRSAKey(mail.RSABoxPath, mail.RSAContext(domain))
	if err != nil {
		return ledger.Req{}, err
	}
	return ledger.Req{Origin: ledger.OriginEnclave, Kind: mail.KindDKIMRSA, Payload: mail.DKIMRSA{Owner: owner, Domain: domain, Selector: mail.SelectorRSA,
		Public: base64.StdEncoding.EncodeToString(pub), Box: base64.StdEncoding.EncodeToString(box)}}, nil
}

// dkimRSA is domain's RSA key record. Domains get theirs with domain add; one
// added before keys were made there gets it here, on first use (two racing
// first uses: the fold keeps the first, the other reads it).
func (b *Broker) dkimRSA(ctx context.Context, lg *ledger.Ledger, owner, domain string) (*mail.DKIMRSA, error) {
	if k, ok, err := mail.GetDKIMRSA(lg.State(ctx), domain); err != nil || ok {
		return k, err
	}
	req, err := b.newDKIMRSA(owner, domain)
	if err != nil {
		return nil, err
	}
	_, err = lg.Append(ctx, req.Origin, req.Kind, req.Payload)
	k, ok, rerr := mail.GetDKIMRSA(lg.State(ctx), domain)
	switch {
	case rerr != nil:
		return nil, rerr
	case ok:
		return k, nil
	}
	return nil, ledgerProblem(err)
}

// DKIMSign signs an agent's outgoing mail: r's header block must hold one From
// naming an inbox the calling agent holds send on. The answer is two
// DKIM-Signature values, Ed25519 (RFC 8463) and RSA-SHA256, over the same
// block and body hash. Every signing, and every refusal for want of send, is
// an entry signed by the agent's wallet; no signature is released before its
// entry is durable. Signings are limited per agent (MintLimit per MintWindow).
func (b *Broker) DKIMSign(ctx context.Context, c *Caller, r apiv1.DKIMSignRequest) (*apiv1.DKIMSignResult, error) {
	lg, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	if c.Agent == nil {
		return nil, problem.New(problem.Denied, "only an agent signs mail, from an inbox it holds send on",
			"send from the agent: its daemon's email_send tool")
	}
	block, err := dkimsig.ParseBlock(r.Headers)
	if err != nil {
		return nil, problem.Newf(problem.BadRequest, "send the header fields to sign in relaxed canonical form, each ending in CRLF (the daemon's email_send does)", "%v", err)
	}
	if !dkimsig.ValidBodyHash(r.BodyHash) {
		return nil, problem.New(problem.BadRequest, "the body hash is not base64 of a SHA-256 digest",
			"send bh: base64 of SHA-256 of the relaxed canonical body")
	}
	from, err := block.From()
	if err != nil {
		return nil, problem.Newf(problem.BadRequest, "name one of the agent's inboxes in From", "%v", err)
	}
	if len(from) > 254 {
		return nil, problem.New(problem.BadRequest, "send from one of the agent's inboxes", "the From address is longer than 254 bytes")
	}
	audit := mail.Signing{Owner: c.Agent.Owner, Actor: c.Omni(), Alias: c.Agent.Alias, From: from}
	// Each signing is a ledger entry: an agent signs at most MintLimit
	// messages per MintWindow (each submission mints a token besides); the
	// first refusal in a window is audited.
	if err := b.limit(b.signs, c.Omni(), "this agent may sign %d messages per %s", func(p error) error {
		audit.Reason = "rate_limited"
		return b.auditRefusal(ctx, c.Omni(), mail.KindSignDenied, audit, "signing", p)
	}); err != nil {
		return nil, err
	}
	st := lg.State(ctx)
	ok, err := mail.Holds(st, c.Agent.Owner, c.Agent.Alias, from, mail.Send)
	if err != nil {
		return nil, err
	}
	if !ok {
		audit.Reason = "no_send"
		return nil, b.auditRefusal(ctx, c.Omni(), mail.KindSignDenied, audit, "signing", problem.Newf(problem.Denied,
			"send from an inbox of this agent, or have the owner grant it: agentkeys inbox grant "+from+" --agent "+c.Agent.Alias+" send",
			"agent %q may not send as %s", c.Agent.Alias, from))
	}
	in, _, err := mail.GetInbox(st, from)
	if err != nil {
		return nil, err
	}
	rsaKey, err := b.dkimRSA(ctx, lg, in.Owner, in.Domain)
	if err != nil {
		return nil, err
	}
	box, err := base64.StdEncoding.DecodeString(rsaKey.Box)
	if err != nil {
		return nil, errors.New("broker: the ledger's DKIM RSA key box is not base64")
	}
	now := b.cfg.Now().Unix()
	res := &apiv1.DKIMSignResult{From: from, Domain: in.Domain}
	sign := func(alg, selector string, f func(digest []byte) ([]byte, error)) error {
		unsigned := dkimsig.Unsigned(dkimsig.Params{Alg: alg, Domain: in.Domain, Selector: selector, BodyHash: r.BodyHash, Time: now}, block)
		digest := dkimsig.Digest(block, unsigned)
		sig, err := f(digest[:])
		if err != nil {
			return err
		}
		res.Signatures = append(res.Signatures, apiv1.DKIMSignature{Alg: alg, Selector: selector, Header: dkimsig.Signed(unsigned, sig)})
		return nil
	}
	blockHash := sha256.Sum256([]byte(block.Raw))
	audit.Domain, audit.Headers, audit.HeaderHash, audit.BodyHash = in.Domain, block.Names(), hex.EncodeToString(blockHash[:]), r.BodyHash
	audited := lg.Begin(ctx, ledger.AccountOrigin(c.Omni()), mail.KindSigned, audit)
	err = sign(dkimsig.AlgEd25519, mail.Selector, func(d []byte) ([]byte, error) { return b.enc.SignEd25519(mail.DKIMPath(in.Domain), d) })
	if err == nil {
		err = sign(dkimsig.AlgRSA, rsaKey.Selector, func(d []byte) ([]byte, error) {
			return b.enc.SignRSA(mail.RSABoxPath, mail.RSAContext(in.Domain), box, d)
		})
	}
	if _, aerr := audited(); aerr != nil {
		return nil, problem.New(problem.Internal, "the signing could not be audited, so no signature was released", "retry; the operator should check the server log")
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}
