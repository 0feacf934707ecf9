package broker

// Proofs of possession: checking the DPoP proof an agent session's request
// (and a daemon's pair poll) carries, against the broker's public URLs.

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// Proof is a request's DPoP header with what it must match.
type Proof struct {
	JWS    string
	Method string
	Path   string // request path (escaped, no query)
}

// htuBases returns the URLs a proof may name before the request path: the
// issuer and the other public URLs, normalised (RFC 9449 §4.3) and without a
// trailing slash. Never one made from a request: its Host header is the
// sender's choice.
func htuBases(issuer string, public []string) ([]string, error) {
	var out []string
	for _, raw := range append([]string{issuer}, public...) {
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
			return nil, fmt.Errorf("public URL %q: use scheme://host[:port][/path], without query or fragment", raw)
		}
		base, err := dpop.HTU(raw)
		if err != nil {
			return nil, fmt.Errorf("public URL %q: use scheme://host[:port][/path] with http or https", raw)
		}
		if base = strings.TrimSuffix(base, "/"); !slices.Contains(out, base) {
			out = append(out, base)
		}
	}
	return out, nil
}

func (b *Broker) checkProof(pr Proof, jkt, tok string) error {
	urls := make([]string, len(b.htuBases))
	for i, base := range b.htuBases {
		urls[i] = base + pr.Path
	}
	err := b.proofs.Verify(pr.JWS, dpopWant(pr.Method, urls, jkt, tok))
	switch {
	case errors.Is(err, dpop.ErrBeforeStart):
		p := problem.New(problem.Unauthenticated, "the request's proof of possession was made before the broker started",
			"make a new proof and retry (agentkeys daemon does so once on its own); if this persists, the daemon's clock is behind the broker's")
		p.RetryAfter = 1
		return p
	case err != nil:
		return problem.New(problem.Unauthenticated, "the request's proof of possession was refused ("+proofWhy(err)+")",
			"requests of an agent session must carry a fresh DPoP proof signed by the daemon's key: use agentkeys daemon, and pass --server as the broker's URL (its --issuer, or one of its --public-url)")
	}
	return nil
}

func dpopWant(method string, urls []string, jkt, tok string) dpop.Want {
	return dpop.Want{Method: method, URLs: urls, JKT: jkt, Token: tok}
}

// proofWhy is the refusal reason without the package prefix (fixed text only).
func proofWhy(err error) string {
	return strings.TrimPrefix(err.Error(), dpop.ErrInvalid.Error()+": ")
}
