package token

import (
	"fmt"
	"testing"
)

func BenchmarkMint(b *testing.B) {
	iss := newIssuer(b, openEnclave(b), Options{Now: newClock(t0).Now})
	c := agentClaims(t0)
	for b.Loop() {
		if _, _, err := iss.Mint(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCold measures a full verification (parse, header,
// signature, claims) with the cache disabled.
func BenchmarkVerifyCold(b *testing.B) {
	iss := newIssuer(b, openEnclave(b), Options{Now: newClock(t0).Now, CacheSize: -1})
	tok, _ := mint(b, iss, agentClaims(t0))
	for b.Loop() {
		if _, err := iss.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCached measures a cache hit among many cached tokens.
func BenchmarkVerifyCached(b *testing.B) {
	iss := newIssuer(b, openEnclave(b), Options{Now: newClock(t0).Now})
	var toks []string
	for n := range 256 {
		c := agentClaims(t0)
		c.SessionID = fmt.Sprint("sess-", n)
		tok, _ := mint(b, iss, c)
		if _, err := iss.Verify(tok); err != nil {
			b.Fatal(err)
		}
		toks = append(toks, tok)
	}
	n := 0
	for b.Loop() {
		if _, err := iss.Verify(toks[n%len(toks)]); err != nil {
			b.Fatal(err)
		}
		n++
	}
}
