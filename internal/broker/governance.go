package broker

import (
	"context"
	"errors"
	"fmt"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// Submit appends a governance-signed entry. kind, when not empty, is the only kind
// accepted (for routes dedicated to one registry).
func (b *Broker) Submit(ctx context.Context, e ledger.Entry, kind string) (ledger.Entry, error) {
	l, err := b.Ledger()
	if err != nil {
		return ledger.Entry{}, err
	}
	if e.Origin != ledger.OriginGovernance {
		return ledger.Entry{}, problem.New(problem.Denied,
			"only governance entries can be submitted; enclave and account entries are signed inside the broker",
			"set origin to \"governance\" and sign with the governance keys listed in genesis")
	}
	if kind == "" && e.Kind == registry.KindOidcRotate {
		return ledger.Entry{}, problem.New(problem.BadRequest, "an oidc.rotate request is carried out by POST /v1/oidc/rotate, not recorded alone",
			"use agentkeys oidc rotate")
	}
	if e.Kind == registry.KindSessionKeyRotate {
		if err := b.checkSessionKeyRotate(e); err != nil {
			return ledger.Entry{}, err
		}
	}
	if kind != "" && e.Kind != kind {
		return ledger.Entry{}, problem.Newf(problem.BadRequest, "send it to the route for its kind, or POST /v1/ledger/entries",
			"this route accepts %s entries, not %q", kind, e.Kind)
	}
	out, err := l.Submit(ctx, e)
	if err != nil {
		return out, ledgerProblem(err)
	}
	return out, nil
}

// ledgerProblem turns a refused append into a user-facing problem.
func ledgerProblem(err error) error {
	switch {
	case errors.As(err, new(*ledger.IncidentKeyError)):
		return problem.New(problem.Denied, "entry refused: "+err.Error(),
			"incident keys revoke OIDC keys only (oidc.key.revoke); for any other change collect the members' signatures (agentkeys governance propose, sign, submit)")
	case errors.As(err, new(*ledger.ThresholdError)):
		return problem.New(problem.Denied, "entry refused: "+err.Error(),
			"collect the missing signatures: make a proposal (agentkeys governance propose), have enough members sign it (agentkeys governance sign), then submit it (agentkeys governance submit)")
	case errors.Is(err, ledger.ErrReplay):
		return problem.New(problem.Conflict, "entry refused: "+err.Error(),
			"a proposal is carried out once: make a new one (agentkeys governance propose) if the change is wanted again")
	case errors.Is(err, ledger.ErrConflict):
		return problem.New(problem.Conflict, err.Error(), "fetch GET /v1/ledger/head, rebuild the entry on it, sign again and resubmit")
	case errors.Is(err, ledger.ErrSignature), errors.Is(err, ledger.ErrOrigin):
		return problem.New(problem.Denied, "entry refused: "+err.Error(), "sign the entry's hash with keys of the origin the kind requires")
	case errors.Is(err, ledger.ErrUnknownKind), errors.Is(err, ledger.ErrRejected), errors.Is(err, ledger.ErrPayload):
		return problem.New(problem.BadRequest, "entry refused: "+err.Error(), "correct the entry; nothing was written")
	case errors.Is(err, ledger.ErrClosed):
		return problem.New(problem.NotReady, "the broker is shutting down", "retry against the restarted server")
	}
	return err
}

// GovernanceFile is where agentkeys governance init puts the genesis governance
// set (members and threshold) before a broker's first start; without it the
// first start creates the operator key and a 1-of-1 set.
func GovernanceFile(dataDir string) string { return filepath.Join(dataDir, "governance.json") }

// loadGenesisGovernance reads GovernanceFile; ok is false when there is none.
func loadGenesisGovernance(dataDir string) (gv ledger.Governance, ok bool, err error) {
	b, err := os.ReadFile(GovernanceFile(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return gv, false, nil
	} else if err != nil {
		return gv, false, err
	}
	if err := ledger.DecodeStrict(b, &gv); err != nil {
		return gv, false, fmt.Errorf("%s: %w", GovernanceFile(dataDir), err)
	}
	if err := ledger.ValidateGovernance(gv); err != nil {
		return gv, false, fmt.Errorf("%s: %w", GovernanceFile(dataDir), err)
	}
	return gv, true, nil
}

// warnGovernanceFile logs when the data dir's governance.json is not the set in
// force: it is read at genesis only (a shared ledger may have had its genesis
// from another instance, or the set changed since).
func (b *Broker) warnGovernanceFile(st ledger.State) {
	want, ok, err := loadGenesisGovernance(b.cfg.DataDir)
	if err != nil || !ok {
		return
	}
	gv, err := ledger.CurrentGovernance(st)
	if err == nil && (gv.Threshold != want.Threshold || !slices.Equal(gv.Keys, want.Keys) || !slices.Equal(gv.Incident, want.Incident)) {
		b.log.Warn("governance.json is not the ledger's governance set, which is in force; it is read at genesis only: change the set with agentkeys governance init --out",
			"path", GovernanceFile(b.cfg.DataDir), "threshold", gv.Threshold, "members", len(gv.Keys))
	}
}

// Governance returns the governance set in force and the ledger's identity.
func (b *Broker) Governance(ctx context.Context) (*apiv1.GovernanceInfo, error) {
	l, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	gv, err := ledger.CurrentGovernance(l.State(ctx))
	if err != nil {
		return nil, err
	}
	return &apiv1.GovernanceInfo{Ledger: l.ID(), Threshold: gv.Threshold, Members: gv.Keys, Incident: append([]string{}, gv.Incident...)}, nil
}

// SubmitProposal carries out a governance proposal its members signed offline
// (agentkeys governance submit). The ledger checks it: the signatures of at least
// the threshold of distinct members of the set in force over this ledger's
// identity, kind, payload, nonce and expiry; an unexpired proposal whose nonce
// was never used. The checks here only give a clearer answer first.
func (b *Broker) SubmitProposal(ctx context.Context, p ledger.Proposal) (*apiv1.ProposalResult, error) {
	l, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	if err := p.Check(); err != nil {
		return nil, problem.New(problem.BadRequest, "the proposal is malformed: "+err.Error(), "make it with agentkeys governance propose")
	}
	if id := l.ID(); p.Ledger != id {
		return nil, problem.Newf(problem.Denied, "propose it again against this broker: agentkeys governance propose --server URL",
			"this proposal is for ledger %.16s…, not this broker's ledger %.16s…", p.Ledger, id)
	}
	if now := b.cfg.Now(); now.Unix() > p.Expires {
		return nil, problem.Newf(problem.Denied, "propose it again (agentkeys governance propose) and collect the signatures anew",
			"the proposal expired at %s", time.Unix(p.Expires, 0).UTC().Format(time.RFC3339))
	}
	e, err := p.Entry()
	if err != nil {
		return nil, problem.New(problem.BadRequest, "the proposal is malformed: "+err.Error(), "sign it with agentkeys governance sign")
	}
	if p.Kind == registry.KindOidcRotate {
		out, res, err := b.rotate(ctx, e)
		if err != nil {
			return nil, err
		}
		return &apiv1.ProposalResult{Entry: out, Rotate: res}, nil
	}
	out, err := b.Submit(ctx, e, "")
	if err != nil {
		return nil, err
	}
	return &apiv1.ProposalResult{Entry: out}, nil
}
