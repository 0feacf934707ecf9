package token

import (
	"errors"
	"testing"
)

// FuzzVerify feeds arbitrary text to Verify: it must never panic, every
// refusal must wrap ErrInvalid and keep the input out of its text, and only
// the genuine tokens may verify.
func FuzzVerify(f *testing.F) {
	e := openEnclave(f)
	iss := newIssuer(f, e, Options{Now: newClock(t0).Now, CacheSize: 64})
	owner, _ := mint(f, iss, ownerClaims(t0))
	agent, _ := mint(f, iss, agentClaims(t0))
	genuine := map[string]bool{owner: true, agent: true}
	h, p, s := segments(f, agent)
	for _, seed := range []string{
		owner, agent, "", ".", "..", h + "." + p + ".", h + ".." + s, "eyJhbGciOiJub25lIn0.e30.",
		`{"payload":"` + p + `","protected":"` + h + `","signature":"` + s + `"}`, agent + "." + s,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := iss.Verify(tok)
		if err == nil {
			if !genuine[tok] || c == nil {
				t.Fatalf("Verify accepted a token nobody minted")
			}
			return
		}
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error does not wrap ErrInvalid: %v", err)
		}
		assertNoLeak(t, err, tok)
	})
}
