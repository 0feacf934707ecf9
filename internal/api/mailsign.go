package api

// The agent's DKIM signing route (§9): POST /v1/mail/dkim-sign.

import (
	"net/http"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
)

func (s *server) routesMailSign(handle func(string, func(http.ResponseWriter, *http.Request) error)) {
	handle("POST /v1/mail/dkim-sign", s.authed(s.dkimSign))
}

func (s *server) dkimSign(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	var body apiv1.DKIMSignRequest
	if err := decode(r, &body); err != nil {
		return err
	}
	res, err := s.b.DKIMSign(r.Context(), c, body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
