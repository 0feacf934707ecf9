package broker

import (
	"context"
	"errors"

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
