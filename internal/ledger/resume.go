package ledger

import (
	"errors"
	"maps"
)

// NewPublicVerifierAt is NewPublicVerifier resuming at p, after a walk that
// stopped there: st holds the public state folded up to p, and wallets the
// account wallets that walk bound (Wallets). The next entry it checks is
// p.Next, linking to p.Prev; entries before it are taken as verified. It is
// for a verifier that keeps what it verified between runs (the daemon's view
// of the OIDC key registry): the caller vouches for st and wallets.
func NewPublicVerifierAt(s Schema, st State, p Position, wallets map[string]string) (*Verifier, error) {
	if p.Next == 0 || p.Gov == nil {
		return nil, errors.New("ledger: a public verifier resumes after genesis (next > 0, governance known)")
	}
	v := NewPublicVerifier(s, st)
	v.pos = p
	maps.Copy(v.wallets, wallets)
	return v, nil
}

// Wallets returns, in public mode, the wallet each account's first entry
// bound (what NewPublicVerifierAt takes back).
func (v *Verifier) Wallets() map[string]string { return maps.Clone(v.wallets) }
