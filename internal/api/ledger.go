package api

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func (s *server) enclaveInfo(w http.ResponseWriter, _ *http.Request) error {
	q := s.b.Attest(nil)
	sk, err := s.b.SessionKeyList()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.EnclaveInfo{MrEnclave: q.MrEnclave, MrSigner: q.MrSigner, Tier: string(q.Tier), Keys: s.b.EnclaveKeys(), Quote: q, SessionKeys: sk})
	return nil
}

func (s *server) attestation(w http.ResponseWriter, r *http.Request) error {
	nonce := r.URL.Query().Get("nonce")
	if nonce == "" || len(nonce) > 256 {
		return problem.New(problem.BadRequest, "nonce must be 1 to 256 characters", "call GET /v1/attestation?nonce=<fresh random value>")
	}
	writeJSON(w, http.StatusOK, s.b.Attest([]byte(nonce)))
	return nil
}

func (s *server) ledgerHead(w http.ResponseWriter, r *http.Request) error {
	h, ok, err := s.b.Head(r.Context())
	if err != nil {
		return err
	}
	if !ok {
		return problem.New(problem.NotReady, "the ledger has no entries yet", "wait for the server to become ready")
	}
	writeJSON(w, http.StatusOK, apiv1.HeadInfo{Seq: h.Seq, Hash: h.Hash, Time: time.Unix(0, h.Time).UTC().Format(time.RFC3339Nano)})
	return nil
}

// uintParam reads a query parameter that is a seq or a count: 0 to 2^63-1 (the
// store keeps seqs as signed 64-bit integers; a larger value would wrap).
func uintParam(r *http.Request, name string, def uint64) (uint64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > math.MaxInt64 {
		return 0, problem.Newf(problem.BadRequest, "pass an integer from 0 to 9223372036854775807",
			"%s=%.40q is not an integer from 0 to 2^63-1", name, v)
	}
	return n, nil
}

func (s *server) ledgerEntries(w http.ResponseWriter, r *http.Request) error {
	from, err := uintParam(r, "from", 0)
	if err != nil {
		return err
	}
	limit, err := uintParam(r, "limit", 100)
	if err != nil {
		return err
	}
	if limit == 0 || limit > apiv1.MaxEntriesPage {
		return problem.Newf(problem.BadRequest, "ask for at most 1000 entries per page", "limit must be 1..%d", apiv1.MaxEntriesPage)
	}
	// Anonymous callers see private entries redacted; an owner's session (sent as
	// a bearer token) opens that owner's own. A token that does not verify is
	// refused rather than served the anonymous view.
	var c *broker.Caller
	if h := r.Header.Get("Authorization"); h != "" {
		tok, _ := strings.CutPrefix(h, "Bearer ")
		if c, err = s.b.AuthenticateRequest(r.Context(), tok, proofOf(r)); err != nil {
			return err
		}
	}
	es, err := s.b.Entries(r.Context(), c, from, int(limit))
	if err != nil {
		return err
	}
	next := from
	if len(es) > 0 {
		next = es[len(es)-1].Seq + 1
	}
	if es == nil {
		es = []ledger.Entry{}
	}
	writeJSON(w, http.StatusOK, apiv1.EntriesPage{Entries: es, Next: next})
	return nil
}

func (s *server) submitEntry(kind string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var e ledger.Entry
		if err := decode(r, &e); err != nil {
			return err
		}
		out, err := s.b.Submit(r.Context(), e, kind)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusCreated, out)
		return nil
	}
}

func (s *server) successors(w http.ResponseWriter, r *http.Request) error {
	list, err := s.b.Successors(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (s *server) handoff(w http.ResponseWriter, r *http.Request) error {
	var req apiv1.HandoffRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	out, err := s.b.Handoff(r.Context(), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
