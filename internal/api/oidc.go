package api

import (
	"net/http"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
)

func (s *server) routesOIDC(handle func(string, func(http.ResponseWriter, *http.Request) error)) {
	handle("GET "+apiv1.DiscoveryPath, s.discovery)
	handle("GET "+apiv1.JWKSPath, s.jwks)
	handle("POST /v1/oidc/token", s.authed(s.oidcToken))
	handle("GET /v1/oidc/keys", s.oidcKeys)
	handle("POST /v1/oidc/rotate", s.anon(broker.AnonSubmit, s.oidcRotate))
	handle("GET /mock/oidc-pubkeys/active", s.oidcActive)
	handle("GET /mock/oidc-pubkeys/{kid}", s.oidcKey)
	// register accepts nothing from outside (§10.1: the kind's origin is the
	// enclave's, which registers inside the broker). It stays mounted because
	// §10.1 keeps the path for tools: the broker's origin check tells a caller
	// DENIED (BAD_REQUEST for another kind) with a fix, not a 404; the caller
	// pays the submit admission like any other anonymous write; nothing is
	// appended.
	handle("POST /mock/oidc-pubkeys/register", s.anon(broker.AnonSubmit, s.submitEntry(registry.KindOidcKeyRegister)))
	// revoke is governance's (the watchdog and the runbook revoke a drifted or
	// compromised kid, §10.2).
	handle("POST /mock/oidc-pubkeys/revoke", s.anon(broker.AnonSubmit, s.submitEntry(registry.KindOidcKeyRevoke)))
}

// writeCached writes a public JSON document relying parties may cache.
func writeCached(w http.ResponseWriter, v any) { writeJSONCache(w, http.StatusOK, "max-age=300", v) }

func (s *server) discovery(w http.ResponseWriter, _ *http.Request) error {
	writeCached(w, s.b.Discovery())
	return nil
}

func (s *server) jwks(w http.ResponseWriter, r *http.Request) error {
	k, err := s.b.JWKS(r.Context())
	if err != nil {
		return err
	}
	writeCached(w, k)
	return nil
}

func (s *server) oidcToken(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	var body apiv1.OIDCRequest
	if err := decode(r, &body); err != nil {
		return err
	}
	t, err := s.b.MintOIDC(r.Context(), c, body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (s *server) oidcKeys(w http.ResponseWriter, r *http.Request) error {
	l, err := s.b.OIDCKeys(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.OIDCKeyList{Keys: l})
	return nil
}

func (s *server) oidcRotate(w http.ResponseWriter, r *http.Request) error {
	var e ledger.Entry
	if err := decode(r, &e); err != nil {
		return err
	}
	res, err := s.b.Rotate(r.Context(), e)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, res)
	return nil
}

func (s *server) oidcActive(w http.ResponseWriter, r *http.Request) error {
	l, err := s.b.OIDCKeys(r.Context())
	if err != nil {
		return err
	}
	out := []apiv1.ActiveKey{}
	for _, k := range l { // State is the broker's, by its clock
		if k.State == "current" || k.State == "retiring" {
			out = append(out, apiv1.ActiveKey{Kid: k.Kid, Pubkey: k.Public})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) oidcKey(w http.ResponseWriter, r *http.Request) error {
	l, err := s.b.OIDCKeys(r.Context())
	if err != nil {
		return err
	}
	kid := r.PathValue("kid")
	for _, k := range l {
		if k.Kid == kid {
			writeJSON(w, http.StatusOK, k)
			return nil
		}
	}
	return problem.New(problem.NotFound, "no OIDC key with this kid", "list them with GET /mock/oidc-pubkeys/active")
}
