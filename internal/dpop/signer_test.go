package dpop

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSignerClaimsAsMarshal: the claims a Signer writes by hand are the bytes
// json.Marshal writes for them, for plain URLs and for methods and URLs whose
// characters encoding/json escapes.
func TestSignerClaimsAsMarshal(t *testing.T) {
	k, _, _, now := setup(t)
	for _, tc := range []struct{ method, url, token string }{
		{"POST", "http://127.0.0.1:8090/v1/credentials/openai/read", "tok"},
		{"GET", credURL + "?x=1#f", ""},
		{"GET", "https://keys.example.com/a&b/%3Cx%3E/caf%C3%A9", "t"},
		{`PO"ST`, "https://keys.example.com/", "tok"},
		{"G\u00e9T<\n>", "https://keys.example.com/%22%5C", "tok"},
	} {
		s, err := NewSigner(k, tc.token)
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.Sign(tc.method, tc.url, *now)
		if err != nil {
			t.Fatal(err)
		}
		payload, err := base64.RawURLEncoding.DecodeString(strings.Split(p, ".")[1])
		if err != nil {
			t.Fatal(err)
		}
		var c Claims
		if err := json.Unmarshal(payload, &c); err != nil {
			t.Fatalf("%q: claims are not JSON: %v", tc.url, err)
		}
		htu, _ := HTU(tc.url)
		want := Claims{HTM: tc.method, HTU: htu, IAT: now.Unix(), JTI: c.JTI}
		if tc.token != "" {
			want.ATH = ATH(tc.token)
		}
		wb, _ := json.Marshal(want)
		if string(payload) != string(wb) || len(c.JTI) != 32 {
			t.Errorf("%q %q: claims\n %s\nwant\n %s", tc.method, tc.url, payload, wb)
		}
	}
}

// TestSignerProofs: a Signer's proofs verify, each has its own jti (from
// concurrent callers too), and each is refused when used a second time; a
// proof made for one token, method or URL is refused for another.
func TestSignerProofs(t *testing.T) {
	k, jkt, v, now := setup(t)
	s, err := NewSigner(k, "tok")
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	proofs := make([]string, n)
	var wg sync.WaitGroup
	for i := range proofs {
		wg.Go(func() {
			p, err := s.Sign("POST", credURL, *now)
			if err != nil {
				t.Error(err)
			}
			proofs[i] = p
		})
	}
	wg.Wait()
	w := Want{Method: "POST", URLs: []string{credURL}, JKT: jkt, Token: "tok"}
	jtis := map[string]bool{}
	for _, p := range proofs {
		c, _ := base64.RawURLEncoding.DecodeString(strings.Split(p, ".")[1])
		var cl Claims
		json.Unmarshal(c, &cl)
		if jtis[cl.JTI] {
			t.Fatalf("jti %s made twice", cl.JTI)
		}
		jtis[cl.JTI] = true
		if err := v.Verify(p, w); err != nil {
			t.Fatalf("a signer's proof: %v", err)
		}
		if err := v.Verify(p, w); !errors.Is(err, ErrReplayed) {
			t.Fatalf("the same proof again: %v, want ErrReplayed", err)
		}
	}
	for name, w := range map[string]Want{
		"another token":  {Method: "POST", URLs: []string{credURL}, JKT: jkt, Token: "other"},
		"no token":       {Method: "POST", URLs: []string{credURL}, JKT: jkt},
		"another method": {Method: "GET", URLs: []string{credURL}, JKT: jkt, Token: "tok"},
		"another URL":    {Method: "POST", URLs: []string{credURL + "x"}, JKT: jkt, Token: "tok"},
	} {
		p, _ := s.Sign("POST", credURL, *now)
		if err := v.Verify(p, w); !errors.Is(err, ErrInvalid) || errors.Is(err, ErrReplayed) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	// Without a token the proof has no ath, and a request with one refuses it.
	bare, _ := NewSigner(k, "")
	p, _ := bare.Sign("POST", credURL, *now)
	if err := v.Verify(p, w); !errors.Is(err, ErrInvalid) {
		t.Errorf("a proof without ath for a token: %v", err)
	}
	// The proof is dated by the time passed, not by an earlier one.
	later := now.Add(90 * time.Second)
	p, _ = s.Sign("POST", credURL, later)
	if err := v.Verify(p, w); err == nil {
		t.Error("a proof dated 90 s ahead of the verifier was accepted")
	}
}

func TestNewSignerRefusesOtherKeys(t *testing.T) {
	if _, err := NewSigner(nil, "tok"); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil key: %v", err)
	}
}

// BenchmarkSigner is one proof made by a kept Signer (the daemon's cost per
// broker call).
func BenchmarkSigner(b *testing.B) {
	k, _, _, now := setup(b)
	s, err := NewSigner(k, "tok")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Sign("POST", credURL, *now); err != nil {
			b.Fatal(err)
		}
	}
}
