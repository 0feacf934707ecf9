package api

// The mail edge's lookup (§9): a separate agentkeys mail-edge process asks its
// broker about recipients and senders. The route answers only a caller that
// presents the edge secret the server was started with (server
// --mail-edge-secret); without one configured it is off. A caller without the
// secret costs one SHA-256 and learns nothing.

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func (s *server) routesMailEdge(handle func(string, func(http.ResponseWriter, *http.Request) error)) {
	handle("POST /v1/mail/edge/lookup", s.mailLookup)
	handle("POST /v1/mail/edge/inboxes", s.mailInboxes)
}

// edgeOnly answers a caller that is not the edge.
func (s *server) edgeOnly(r *http.Request) error {
	if s.edgeSecret == nil {
		return problem.New(problem.NotFound, "this broker serves no separate mail edge",
			"the operator starts the server with --mail-edge-secret FILE and the edge with agentkeys mail-edge --edge-secret FILE")
	}
	got := sha256.Sum256([]byte(r.Header.Get(apiv1.MailEdgeSecretHeader)))
	if subtle.ConstantTimeCompare(got[:], s.edgeSecret) != 1 {
		return problem.New(problem.Unauthenticated, "the mail edge secret is missing or wrong",
			"start agentkeys mail-edge with --edge-secret naming the file the server's --mail-edge-secret names")
	}
	return nil
}

func (s *server) mailLookup(w http.ResponseWriter, r *http.Request) error {
	if err := s.edgeOnly(r); err != nil {
		return err
	}
	var body apiv1.MailLookupBody
	if err := decode(r, &body); err != nil {
		return err
	}
	out, err := s.b.MailLookup(r.Context(), body.Address, body.Agent)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// mailInboxes lists the live inboxes an agent holds rights on (the edge's IMAP
// server offers those it may read).
func (s *server) mailInboxes(w http.ResponseWriter, r *http.Request) error {
	if err := s.edgeOnly(r); err != nil {
		return err
	}
	var body apiv1.MailInboxesBody
	if err := decode(r, &body); err != nil {
		return err
	}
	out, err := s.b.MailInboxes(r.Context(), body.Agent)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.MailInboxes{Inboxes: out})
	return nil
}
