package api

import (
	"net/http"

	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// routesGovernance serves the governance set in force and takes proposals its
// members signed offline. A proposal submit is anonymous like every governance
// write (the signatures are the authority) and admission-limited the same way.
func (s *server) routesGovernance(handle func(string, func(http.ResponseWriter, *http.Request) error)) {
	handle("GET /v1/governance", s.governance)
	handle("POST /v1/governance/proposals", s.anon(broker.AnonSubmit, s.submitProposal))
}

func (s *server) governance(w http.ResponseWriter, r *http.Request) error {
	g, err := s.b.Governance(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}

func (s *server) submitProposal(w http.ResponseWriter, r *http.Request) error {
	var p ledger.Proposal
	if err := decode(r, &p); err != nil {
		return err
	}
	res, err := s.b.SubmitProposal(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, res)
	return nil
}
