package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/seal"
	"github.com/agentkeys/agentkeys/internal/token"
	"github.com/agentkeys/agentkeys/internal/vault"
)

// MaxCredentialCiphertext bounds a stored ciphertext (bytes).
const MaxCredentialCiphertext = 64 << 10

// StoreRequest stores a credential already encrypted to the shielding key.
type StoreRequest struct {
	Service    string
	Agent      string // alias, or "" for owner-wide
	Ciphertext []byte
	Approval   string // none (default) or required
}

func agentField(alias string) string {
	if alias == "" {
		return apiv1.OwnerWide
	}
	return alias
}

func checkNames(service, agent string) error {
	if !apiv1.ValidName(service) {
		return problem.Newf(problem.BadRequest, "use 1-63 lowercase letters, digits, '.', '_' or '-', e.g. openai",
			"%q is not a valid service name", service)
	}
	if agent != apiv1.OwnerWide && !apiv1.ValidName(agent) {
		return problem.Newf(problem.BadRequest, "use the agent's alias as given at pairing", "%q is not a valid agent alias", agent)
	}
	return nil
}

// Store keeps a credential: it checks that the ciphertext opens for this exact
// owner/agent/service inside the enclave, then appends credential.stored with the
// ciphertext as a blob in the same transaction. The broker never sees plaintext.
func (b *Broker) Store(ctx context.Context, c *Caller, r StoreRequest) (*vault.Credential, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	agent := agentField(r.Agent)
	if err := checkNames(r.Service, agent); err != nil {
		return nil, err
	}
	if r.Approval == "" {
		r.Approval = apiv1.ApprovalNone
	}
	if r.Approval != apiv1.ApprovalNone && r.Approval != apiv1.ApprovalRequired {
		return nil, problem.New(problem.BadRequest, "approval must be none or required", "pass --approval required for high-value credentials")
	}
	if len(r.Ciphertext) == 0 || len(r.Ciphertext) > MaxCredentialCiphertext {
		return nil, problem.Newf(problem.BadRequest, "store a secret of at most 60 KiB", "ciphertext must be 1..%d bytes", MaxCredentialCiphertext)
	}
	if err := b.enc.CheckSealed(seal.ShieldingPath, seal.CredentialInfo(c.Omni(), agent, r.Service), r.Ciphertext); err != nil {
		return nil, problem.New(problem.BadRequest, "the ciphertext was not encrypted to this broker's shielding key for this owner, agent and service",
			"store through `agentkeys store`, which encrypts to the attested shielding key")
	}
	prev, ok, err := vault.Get(lg.State(ctx), c.Omni(), agent, r.Service)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(r.Ciphertext)
	cr := vault.Credential{Owner: c.Omni(), Agent: agent, Service: r.Service, CiphertextHash: hex.EncodeToString(sum[:]),
		Version: 1, Approval: r.Approval, Size: len(r.Ciphertext)}
	if ok {
		cr.Version = prev.Version + 1
	}
	e, err := lg.AppendBlob(ctx, ledger.AccountOrigin(c.Omni()), vault.KindStored, cr, r.Ciphertext)
	if err != nil {
		if errors.Is(err, ledger.ErrRejected) {
			return nil, problem.New(problem.Conflict, "the credential changed while storing", "run the store again")
		}
		return nil, ledgerProblem(err)
	}
	cr.Stored = e.Time
	return &cr, nil
}

// ReadRequest asks for one credential.
type ReadRequest struct {
	Service   string
	Agent     string // owner reading an agent-specific credential: its alias
	Recipient []byte // hybrid HPKE public key to re-encrypt to; nil = the session channel
}

// readAttempts bounds how often a read starts over because the ledger refused
// its audit entry (the grant it meant to use was taken by a concurrent read, or
// the credential was deleted or its policy changed meanwhile).
const readAttempts = 3

// errRaced means a concurrent entry changed what a read looked up: it starts over.
var errRaced = errors.New("the credential changed while it was being read")

// Read releases a credential to the caller: session (already authenticated) →
// names → rate limit → scope → approval → durable credential.read audit entry →
// the enclave re-encrypts to the caller. No audit, no plaintext: if the audit
// entry is not durable, nothing is decrypted. A read that races a store of the
// same credential releases the version it looked up (the old value) or, looking
// up after the store, the new one: its audit entry names the version released.
func (b *Broker) Read(ctx context.Context, c *Caller, r ReadRequest) (*apiv1.ReadResult, error) {
	o := b.ReadMany(ctx, c, []ReadRequest{r})[0]
	return o.Result, o.Err
}

// ReadOutcome is one read of ReadMany: its Result, or Err, why it was refused.
type ReadOutcome struct {
	Result *apiv1.ReadResult
	Err    error
}

// ReadMany makes several reads at once (POST /v1/reads), in order. Each is the
// read Read makes, judged, rate-limited, audited and answered on its own: a
// refused read refuses only itself. What they share is the ledger's commit:
// their audit entries (of releases and refusals alike) are appended together
// (ledger.BeginEach), where concurrent Reads would each wait for a commit of
// their own.
func (b *Broker) ReadMany(ctx context.Context, c *Caller, rs []ReadRequest) []ReadOutcome {
	out := make([]ReadOutcome, len(rs))
	lg, err := b.Ledger()
	if err != nil {
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	var pending, audits []*readStep
	for i, r := range rs {
		st, err := b.admitRead(c, r)
		switch {
		case st != nil:
			st.i = i
			if st.refusal != nil {
				audits = append(audits, st)
			} else {
				pending = append(pending, st)
			}
		default:
			out[i].Err = err
		}
	}
	for attempt := 1; len(pending) > 0 || len(audits) > 0; attempt++ {
		var raced []*readStep
		for _, st := range pending {
			switch err := b.lookUp(ctx, lg, c, st); {
			case errors.Is(err, errRaced):
				raced = append(raced, st)
			case err != nil:
				out[st.i].Err = err
			default:
				audits = append(audits, st)
			}
		}
		reqs := make([]ledger.Req, len(audits))
		for j, st := range audits {
			reqs[j] = st.entry()
		}
		for j, wait := range lg.BeginEach(ctx, reqs) {
			st := audits[j]
			_, err := wait()
			switch {
			case st.refusal != nil && err != nil:
				out[st.i].Err = unaudited("read")
			case st.refusal != nil:
				out[st.i].Err = st.refusal
			case errors.Is(err, ledger.ErrRejected):
				raced = append(raced, st) // e.g. a concurrent read used the grant first
			case err != nil:
				out[st.i].Err = problem.New(problem.Internal, "the read could not be audited, so nothing was released", "retry; the operator should check the server log")
			default:
				out[st.i].Result = st.res
			}
		}
		pending, audits = raced, nil
		if attempt == readAttempts {
			for _, st := range pending {
				out[st.i].Err = problem.New(problem.Conflict, "the credential kept changing while it was being read; nothing was released", "read again")
			}
			break
		}
	}
	return out
}

// readStep is one read of ReadMany on its way: who reads what, then the entry
// that audits it, and what the read answers once that entry is durable.
type readStep struct {
	i          int // its place in ReadMany's answer
	r          ReadRequest
	admitted   vault.Read        // who reads what, as admitted
	candidates []string          // agent fields to look up, in order
	audit      vault.Read        // the audit entry's payload
	res        *apiv1.ReadResult // a release: the answer
	refusal    error             // a refusal: the answer (audit.Reason says why)
}

// entry is the ledger append that audits st.
func (st *readStep) entry() ledger.Req {
	kind := vault.KindRead
	if st.refusal != nil {
		kind = vault.KindDenied
	}
	return ledger.Req{Origin: ledger.AccountOrigin(st.audit.Actor), Kind: kind, Payload: st.audit}
}

// refuse makes st a refusal for reason, answered with p once audited.
func (st *readStep) refuse(reason string, p error) *readStep {
	st.audit, st.refusal = st.admitted, p
	st.audit.Reason = reason
	return st
}

// admitRead checks who reads what before anything is looked up: names, the
// session's rate limit, the agent's scope. It answers the read's step, a
// refusal to audit, or an error that ends the read unaudited (a malformed
// name, a refusal of the rate limit already audited in its window).
func (b *Broker) admitRead(c *Caller, r ReadRequest) (*readStep, error) {
	st := &readStep{r: r}
	switch {
	case c.Claims.Role == token.RoleOwner:
		agent := agentField(r.Agent)
		if err := checkNames(r.Service, agent); err != nil {
			return nil, err
		}
		st.admitted = vault.Read{Owner: c.Omni(), Agent: agent, Service: r.Service, Actor: c.Omni(), ActorRole: c.Claims.Role, SID: c.Claims.SessionID}
		st.candidates = []string{agent}
	case c.Agent != nil:
		if err := checkNames(r.Service, apiv1.OwnerWide); err != nil {
			return nil, err
		}
		st.admitted = vault.Read{Owner: c.Agent.Owner, Agent: c.Agent.Alias, Service: r.Service, Actor: c.Omni(), ActorRole: c.Claims.Role,
			Alias: c.Agent.Alias, SID: c.Claims.SessionID}
		// The agent's own credential first, then the owner-wide one.
		st.candidates = []string{c.Agent.Alias, apiv1.OwnerWide}
	default:
		return nil, errNotOwner
	}
	var refused *readStep
	if err := b.limit(b.limiter, c.Claims.SessionID, "this session may read %d credentials per %s",
		func(p error) error { refused = st.refuse("rate_limited", p); return p }); refused != nil {
		return refused, nil
	} else if err != nil {
		return nil, err
	}
	if c.Agent != nil {
		if r.Agent != "" && r.Agent != c.Agent.Alias {
			return st.refuse("other_agent", problem.New(problem.Denied,
				"an agent reads only its own and owner-wide credentials", "ask the owner to store the credential for this agent or owner-wide")), nil
		}
		if !slices.Contains(c.Agent.Scope, r.Service) {
			return st.refuse("out_of_scope", problem.Newf(problem.Denied,
				"the owner adds it with: agentkeys agent scope "+c.Agent.Alias+" --add "+r.Service,
				"%q is not in this agent's scope", r.Service)), nil
		}
	}
	return st, nil
}

// lookUp finds st's credential and re-encrypts it to the caller, ready to be
// released once its audit entry is durable; or makes st a refusal (nothing
// stored); or answers errRaced when a concurrent store changed what it looked
// up (st starts over).
func (b *Broker) lookUp(ctx context.Context, lg *ledger.Ledger, c *Caller, st *readStep) error {
	r, audit := st.r, st.admitted // from the start again after a race
	state := lg.State(ctx)
	var cr *vault.Credential
	found := false
	for _, who := range st.candidates {
		var err error
		if cr, found, err = vault.Get(state, audit.Owner, who, r.Service); err != nil {
			return err
		} else if found {
			audit.Agent = who
			break
		}
	}
	if !found {
		if c.Agent != nil {
			st.refuse("not_found", problem.Newf(problem.NotFound,
				fmt.Sprintf("the owner stores it with: agentkeys store %s (owner-wide) or agentkeys store %s --agent %s", r.Service, r.Service, c.Agent.Alias),
				"no credential %q is stored for this agent or owner-wide", r.Service))
			return nil
		}
		st.refuse("not_found", problem.Newf(problem.NotFound, "list what is stored with agentkeys list",
			"no credential %q is stored%s", r.Service, forAgent(audit.Agent)))
		return nil
	}
	owner, agent := audit.Owner, audit.Agent
	audit.Version = cr.Version
	// The ciphertext is taken before the audit entry: a store committing after
	// this point replaces the record and drops the old blob, but this read holds
	// the version it audits.
	blob, ok, err := state.Get(ledger.BlobKey(cr.CiphertextHash))
	if err != nil {
		return err
	}
	if !ok {
		return errRaced // a store replaced the record between the two lookups
	}
	// Re-encrypted before the audit entry, released only after it is durable: a
	// recipient key the enclave cannot encrypt to is refused before anything is
	// written (no entry, no approval request).
	res := &apiv1.ReadResult{Service: r.Service, Agent: agent, Version: cr.Version, Info: string(seal.ReadInfo(owner, agent, r.Service, cr.Version))}
	info := seal.CredentialInfo(owner, agent, r.Service)
	if r.Recipient != nil {
		res.Mode = "hpke"
		res.Sealed, err = b.enc.Reseal(seal.ShieldingPath, info, blob, r.Recipient, []byte(res.Info))
	} else {
		res.Mode = "session"
		res.Sealed, err = b.enc.ResealToSession(seal.ShieldingPath, info, blob, c.Claims.SessionID, []byte(res.Info))
	}
	if err != nil {
		return problem.New(problem.BadRequest, "the credential could not be re-encrypted to the key you sent", "send a hybrid ML-KEM-768+X25519 HPKE public key")
	}
	if cr.Approval == apiv1.ApprovalRequired {
		id, err := b.grantFor(ctx, audit)
		if err != nil {
			return err
		}
		audit.ApprovalID = id
	}
	st.audit, st.res = audit, res
	return nil
}

func forAgent(agent string) string {
	if agent == apiv1.OwnerWide {
		return ""
	}
	return " for agent " + agent
}

// auditRefusal records a refusal of what (a read, a mint) as kind, signed by the
// actor's account, and returns p; if the refusal cannot be recorded, it says so
// instead.
func (b *Broker) auditRefusal(ctx context.Context, actor, kind string, payload any, what string, p error) error {
	lg, err := b.Ledger()
	if err != nil {
		return err
	}
	if _, err := lg.Append(ctx, ledger.AccountOrigin(actor), kind, payload); err != nil {
		return unaudited(what)
	}
	return p
}

// unaudited answers a refusal of what that could not be recorded.
func unaudited(what string) error {
	return problem.New(problem.Internal, "the refused "+what+" could not be audited", "retry; the operator should check the server log")
}

// grantFor finds the owner's unused, unexpired grant for this read, or answers
// APPROVAL_REQUIRED with the caller's open request for this credential: the one
// already pending for this session, else a new one. A reader that retries (or
// waits, polling) while the owner has not decided yet keeps one request.
func (b *Broker) grantFor(ctx context.Context, r vault.Read) (string, error) {
	lg, _ := b.Ledger()
	// One look-and-file at a time, so concurrent reads of one session do not
	// both file a request.
	b.approvalMu.Lock()
	defer b.approvalMu.Unlock()
	list, err := vault.Approvals(lg.State(ctx), r.Owner)
	if err != nil {
		return "", err
	}
	now := b.cfg.Now().Unix()
	var open *vault.Approval
	for i, a := range list {
		if a.Service != r.Service || a.Agent != r.Agent || a.Actor != r.Actor {
			continue
		}
		if a.Status == "granted" && a.Until >= now {
			return a.ID, nil
		}
		if a.Status == "pending" && a.Expires >= now && a.SID == r.SID {
			open = &list[i]
		}
	}
	if open == nil {
		a := vault.Approval{ID: randomID()[:12], Owner: r.Owner, Agent: r.Agent, Service: r.Service, Actor: r.Actor,
			ActorRole: r.ActorRole, Alias: r.Alias, SID: r.SID, Expires: now + int64(b.cfg.ApprovalTTL.Seconds())}
		if _, err := lg.Append(ctx, ledger.AccountOrigin(r.Actor), vault.KindRequested, a); err != nil {
			return "", ledgerProblem(err)
		}
		open = &a
	}
	p := problem.Newf(problem.ApprovalNeeded, fmt.Sprintf("the owner approves it with: agentkeys approve %s ; then read again within %s", open.ID, b.cfg.ApprovalWindow),
		"%q is a high-value credential: its release needs the owner's approval (request %s)", r.Service, open.ID)
	p.Approval = &problem.Approval{ID: open.ID, Expires: open.Expires}
	return "", p
}

// Approve grants one pending approval request of the owner.
func (b *Broker) Approve(ctx context.Context, c *Caller, id string) (*vault.Approval, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	a, ok, err := vault.GetApproval(lg.State(ctx), c.Omni(), id)
	if err != nil {
		return nil, err
	}
	if !ok || a.Status != "pending" {
		return nil, problem.Newf(problem.NotFound, "list pending requests with agentkeys approve --list", "no pending approval request %q", id)
	}
	if b.cfg.Now().Unix() > a.Expires {
		return nil, problem.New(problem.Denied, "the approval request has expired", "ask the reader to read again, which files a new request")
	}
	g := vault.Grant{ID: id, Owner: c.Omni(), Service: a.Service, Agent: a.Agent, Until: b.cfg.Now().Add(b.cfg.ApprovalWindow).Unix()}
	if _, err := lg.Append(ctx, ledger.AccountOrigin(c.Omni()), vault.KindGranted, g); err != nil {
		return nil, ledgerProblem(err)
	}
	a.Status, a.Until = "granted", g.Until
	return a, nil
}

// Approvals lists the owner's approval requests.
func (b *Broker) Approvals(ctx context.Context, c *Caller) ([]vault.Approval, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	return vault.Approvals(lg.State(ctx), c.Omni())
}

// List returns the owner's credential records (no secrets).
func (b *Broker) List(ctx context.Context, c *Caller) ([]vault.Credential, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	return vault.List(lg.State(ctx), c.Omni())
}

// Delete removes a credential (tombstone entry; the blob goes with it).
func (b *Broker) Delete(ctx context.Context, c *Caller, service, alias string) error {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return err
	}
	agent := agentField(alias)
	if err := checkNames(service, agent); err != nil {
		return err
	}
	if _, ok, err := vault.Get(lg.State(ctx), c.Omni(), agent, service); err != nil {
		return err
	} else if !ok {
		return problem.Newf(problem.NotFound, "list what is stored with agentkeys list", "no credential %q is stored%s", service, forAgent(agent))
	}
	_, err = lg.Append(ctx, ledger.AccountOrigin(c.Omni()), vault.KindDeleted,
		vault.Deleted{Owner: c.Omni(), Agent: agent, Service: service, Actor: c.Omni()})
	if errors.Is(err, ledger.ErrRejected) {
		return problem.Newf(problem.NotFound, "list what is stored with agentkeys list", "no credential %q is stored%s", service, forAgent(agent))
	}
	return ledgerProblem(err)
}

// Usage returns the owner's audit trail.
func (b *Broker) Usage(ctx context.Context, c *Caller, f vault.UsageFilter) ([]vault.Usage, error) {
	if _, err := b.ownerLedger(c); err != nil {
		return nil, err
	}
	return b.usage.Usage(ctx, c.Omni(), f)
}
