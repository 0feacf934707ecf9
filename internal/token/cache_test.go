package token

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestAcceptedEdges(t *testing.T) {
	e := openEnclave(t)
	iss := newIssuer(t, e, Options{Now: newClock(t0).Now})
	kid := kidOf(t, e, pathV1)
	set := func(edit func(m map[string]any)) map[string]any {
		m := claimsMap(t, fullAgentClaims(t0))
		edit(m)
		return m
	}
	owner := claimsMap(t, fullClaims(t0))
	owner["cnf"] = map[string]any{"jkt": testJKT(3)}
	cases := map[string]string{
		"no typ header":       signRaw(t, e, pathV1, map[string]any{"alg": "ES256", "kid": kid}, claimsMap(t, fullAgentClaims(t0))),
		"iat 60s ahead":       signRaw(t, e, pathV1, validHeader(kid), set(func(m map[string]any) { m["iat"] = t0 + 60 })),
		"exp in 1s":           signRaw(t, e, pathV1, validHeader(kid), set(func(m map[string]any) { m["iat"], m["exp"] = t0-day, t0+1 })),
		"owner with cnf":      signRaw(t, e, pathV1, validHeader(kid), owner),
		"unknown extra claim": signRaw(t, e, pathV1, validHeader(kid), set(func(m map[string]any) { m["scope"] = "ignored" })),
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := iss.Verify(tok); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

func TestCacheRechecksTime(t *testing.T) {
	e := openEnclave(t)
	clk := newClock(t0)
	iss := newIssuer(t, e, Options{Now: clk.Now})
	c := ownerClaims(t0)
	c.Expiry = t0 + 100
	tok, _ := mint(t, iss, c)
	for range 2 {
		if _, err := iss.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := iss.cache.len(); n != 1 {
		t.Fatalf("cache holds %d entries, want 1", n)
	}
	clk.add(99 * time.Second)
	if _, err := iss.Verify(tok); err != nil {
		t.Fatalf("1s before exp: %v", err)
	}
	clk.add(time.Second)
	if _, err := iss.Verify(tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("cached token at exp: %v, want ErrExpired", err)
	}
	clk.set(t0 - 3600) // clock stepped back: iat is now an hour ahead
	if _, err := iss.Verify(tok); !errors.Is(err, ErrInvalid) || errors.Is(err, ErrExpired) {
		t.Fatalf("cached token with iat in the future: %v, want ErrInvalid", err)
	}
	clk.set(t0)
	if _, err := iss.Verify(tok); err != nil {
		t.Fatalf("back in the window: %v", err)
	}
}

func TestCacheRefusesTamperedVariant(t *testing.T) {
	env := &attackEnv{t: t, e: openEnclave(t)}
	iss := newIssuer(t, env.e, Options{Now: newClock(t0).Now})
	tok, _ := mint(t, iss, agentClaims(t0))
	if _, err := iss.Verify(tok); err != nil {
		t.Fatal(err)
	}
	h, p, s := segments(t, tok)
	variants := []string{
		env.tamper(tok, func(m map[string]any) { m["sub"] = testOmni(5) }),
		env.tamper(tok, func(m map[string]any) { m["exp"] = t0 + 400*day }),
		h + "." + p + "." + nonCanonical(s),
		h + "." + p + "." + otherSig(s),
		tok + ".",
		" " + tok,
	}
	for n, v := range variants {
		if _, err := iss.Verify(v); !errors.Is(err, ErrInvalid) {
			t.Errorf("variant %d of a cached token: %v, want ErrInvalid", n, err)
		}
	}
	if n := iss.cache.len(); n != 1 {
		t.Errorf("cache holds %d entries, want only the genuine token", n)
	}
	if _, err := iss.Verify(tok); err != nil {
		t.Fatalf("genuine token after the variants: %v", err)
	}
}

func TestCacheBound(t *testing.T) {
	e := openEnclave(t)
	const size = 16
	iss := newIssuer(t, e, Options{Now: newClock(t0).Now, CacheSize: size})
	toks := make([]string, 200)
	for n := range toks {
		c := ownerClaims(t0)
		c.SessionID = fmt.Sprintf("sess-%d", n)
		toks[n], _ = mint(t, iss, c)
	}
	for round := range 2 {
		for n, tok := range toks {
			got, err := iss.Verify(tok)
			if err != nil || got.SessionID != fmt.Sprintf("sess-%d", n) {
				t.Fatalf("round %d token %d: %+v, %v", round, n, got, err)
			}
			if l := iss.cache.len(); l > size {
				t.Fatalf("cache holds %d entries, bound is %d", l, size)
			}
		}
	}
	if l := iss.cache.len(); l < size/2 {
		t.Errorf("cache holds only %d of %d entries after 400 verifications", l, size)
	}
}

func TestCacheDisabled(t *testing.T) {
	e := openEnclave(t)
	iss := newIssuer(t, e, Options{Now: newClock(t0).Now, CacheSize: -1})
	tok, _ := mint(t, iss, ownerClaims(t0))
	for range 3 {
		if _, err := iss.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	if iss.cache != nil || iss.cache.len() != 0 {
		t.Fatal("a negative CacheSize still caches")
	}
	if def := newIssuer(t, e, Options{}); def.cache.max != defaultCacheSize {
		t.Fatalf("default cache size %d", def.cache.max)
	}
}

func TestConcurrent(t *testing.T) {
	e := openEnclave(t)
	clk := newClock(t0)
	iss := newIssuer(t, e, Options{Now: clk.Now, CacheSize: 8})
	shared, _ := mint(t, iss, agentClaims(t0))
	env := &attackEnv{t: t, e: e}
	tampered := env.tamper(shared, func(m map[string]any) { m["sid"] = "stolen" })
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() { errs <- worker(iss, g, shared, tampered) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// worker mints and verifies its own tokens and the shared ones.
func worker(iss *Issuer, g int, shared, tampered string) error {
	for n := range 40 {
		c := agentClaims(t0)
		c.SessionID = fmt.Sprintf("g%d-%d", g, n)
		tok, minted, err := iss.Mint(c)
		if err != nil {
			return err
		}
		got, err := iss.Verify(tok)
		if err != nil || got.SessionID != minted.SessionID {
			return fmt.Errorf("worker %d: own token: %v", g, err)
		}
		got.Cnf.JKT = "scribbled"
		if got, err := iss.Verify(shared); err != nil || got.Cnf.JKT != testJKT(1) {
			return fmt.Errorf("worker %d: shared token: %v", g, err)
		}
		if _, err := iss.Verify(tampered); !errors.Is(err, ErrInvalid) {
			return fmt.Errorf("worker %d: tampered token: %v", g, err)
		}
		_ = iss.AcceptedKids()
	}
	return nil
}
