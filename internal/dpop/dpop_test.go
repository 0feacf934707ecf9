package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

const credURL = "https://keys.example.com/v1/agent/credentials"

func setup(t testing.TB) (*ecdsa.PrivateKey, string, *Verifier, *time.Time) {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	jkt, err := Thumbprint(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	return k, jkt, NewVerifier(0, func() time.Time { return now }), &now
}

func TestRoundTripAndReplay(t *testing.T) {
	k, jkt, v, now := setup(t)
	p, err := Sign(k, "GET", credURL+"?x=1", "tok", *now)
	if err != nil {
		t.Fatal(err)
	}
	w := Want{Method: "GET", URLs: []string{credURL}, JKT: jkt, Token: "tok"}
	if err := v.Verify(p, w); err != nil {
		t.Fatalf("valid proof: %v", err)
	}
	if err := v.Verify(p, w); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: %v", err)
	}
	// After the replay window the jti is forgotten, but iat is then too old.
	*now = now.Add(ReplayWindow + time.Second)
	if err := v.Verify(p, w); err == nil {
		t.Fatal("old proof accepted")
	}
}

func TestRefusals(t *testing.T) {
	k, jkt, v, now := setup(t)
	other, _ := NewKey()
	sign := func(key *ecdsa.PrivateKey, method, u, tok string, at time.Time) string {
		p, err := Sign(key, method, u, tok, at)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	w := Want{Method: "GET", URLs: []string{credURL}, JKT: jkt, Token: "tok"}
	cases := map[string]string{
		"empty":          "",
		"other key":      sign(other, "GET", credURL, "tok", *now),
		"other method":   sign(k, "POST", credURL, "tok", *now),
		"other credURL":  sign(k, "GET", "https://keys.example.com/v1/whoami", "tok", *now),
		"other host":     sign(k, "GET", "https://evil.example.com/v1/agent/credentials", "tok", *now),
		"other token":    sign(k, "GET", credURL, "tok2", *now),
		"no ath":         sign(k, "GET", credURL, "", *now),
		"iat too old":    sign(k, "GET", credURL, "tok", now.Add(-2*Skew)),
		"iat in future":  sign(k, "GET", credURL, "tok", now.Add(2*Skew)),
		"garbage":        "a.b.c",
		"too long":       strings.Repeat("a", MaxProofLen+1),
		"alg none":       unsigned(t, k, *now),
		"HS256":          hmacProof(t, k, *now),
		"wrong typ":      withType(t, k, "JWT", *now),
		"private jwk in": sign(k, "GET", credURL, "tok", *now) + "x",
	}
	for name, p := range cases {
		if err := v.Verify(p, w); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
}

func claims(now time.Time) []byte {
	b, _ := json.Marshal(Claims{HTM: "GET", HTU: credURL, IAT: now.Unix(), JTI: "j1", ATH: ATH("tok")})
	return b
}

func unsigned(t *testing.T, k *ecdsa.PrivateKey, now time.Time) string {
	jwk, _ := json.Marshal(jose.JSONWebKey{Key: &k.PublicKey})
	h, _ := json.Marshal(map[string]any{"typ": Type, "alg": "none", "jwk": json.RawMessage(jwk)})
	enc := base64.RawURLEncoding.EncodeToString
	return enc(h) + "." + enc(claims(now)) + "."
}

func hmacProof(t *testing.T, k *ecdsa.PrivateKey, now time.Time) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")},
		(&jose.SignerOptions{}).WithType(Type).WithHeader("jwk", jose.JSONWebKey{Key: &k.PublicKey}))
	if err != nil {
		t.Fatal(err)
	}
	o, err := s.Sign(claims(now))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := o.CompactSerialize()
	return c
}

func withType(t *testing.T, k *ecdsa.PrivateKey, typ string, now time.Time) string {
	s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{EmbedJWK: true}).WithType(jose.ContentType(typ)))
	o, _ := s.Sign(claims(now))
	c, _ := o.CompactSerialize()
	return c
}

func TestReplayCacheIsBounded(t *testing.T) {
	k, jkt, _, now := setup(t)
	v := NewVerifier(3, func() time.Time { return *now })
	w := Want{Method: "GET", URLs: []string{credURL}, JKT: jkt}
	for i := 0; i < 3; i++ {
		p, _ := Sign(k, "GET", credURL, "", *now)
		if err := v.Verify(p, w); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := Sign(k, "GET", credURL, "", *now)
	if err := v.Verify(p, w); err == nil {
		t.Fatal("a full cache of live proofs must refuse, not forget")
	}
	*now = now.Add(ReplayWindow)
	p, _ = Sign(k, "GET", credURL, "", *now)
	if err := v.Verify(p, w); err != nil {
		t.Fatalf("after the window the cache has room again: %v", err)
	}
}

// TestReplayUntilIatExpires: a proof is refused as a replay for as long as its
// iat would be accepted — up to 2×Skew for one dated Skew ahead — and forgotten
// after that.
func TestReplayUntilIatExpires(t *testing.T) {
	k, jkt, v, now := setup(t)
	w := Want{Method: "GET", URLs: []string{credURL}, JKT: jkt}
	start := *now
	ahead, _ := Sign(k, "GET", credURL, "", start.Add(Skew)) // the latest iat accepted
	if err := v.Verify(ahead, w); err != nil {
		t.Fatal(err)
	}
	*now = start.Add(2*Skew - time.Second) // its iat is still accepted
	if err := v.Verify(ahead, w); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay of a proof dated ahead, 119 s later: %v", err)
	}
	*now = start.Add(2*Skew + 2*time.Second)
	fresh, _ := Sign(k, "GET", credURL, "", *now)
	if err := v.Verify(fresh, w); err != nil {
		t.Fatal(err)
	}
	if n := len(v.replays.seen); n != 1 {
		t.Fatalf("%d proofs remembered, want only the fresh one", n)
	}
}

// TestReplayCacheSustained: at a steady 5,000 proofs/s for five minutes the
// default cache never refuses, and holds only the last minute or so of proofs.
func TestReplayCacheSustained(t *testing.T) {
	v := NewVerifier(0, nil)
	const rate, seconds = 5000, 300
	t0 := int64(1_800_000_000)
	skew := int64(Skew / time.Second)
	var id [16]byte
	for sec := t0; sec < t0+seconds; sec++ {
		for i := range rate {
			rand.Read(id[:8])
			id[8], id[9] = byte(i), byte(i>>8)
			if err := v.replays.remember(id, sec+skew+1, sec); err != nil {
				t.Fatalf("second %d, proof %d: %v", sec-t0, i, err)
			}
		}
	}
	if n := int64(len(v.replays.seen)); n > rate*(skew+2) {
		t.Fatalf("%d proofs remembered, want at most %d", n, rate*(skew+2))
	}
}

func TestThumbprintMatchesJWK(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	raw, err := PublicJWK(k)
	if err != nil {
		t.Fatal(err)
	}
	_, tp, err := ParseJWK(raw)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Thumbprint(&k.PublicKey)
	if tp != want || len(tp) != 43 {
		t.Fatalf("thumbprint %q want %q", tp, want)
	}
	// and it is go-jose's RFC 7638 thumbprint
	jt, err := (&jose.JSONWebKey{Key: &k.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil || base64.RawURLEncoding.EncodeToString(jt) != want {
		t.Fatalf("thumbprint %q, go-jose's %x (%v)", want, jt, err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	raw, _ = json.Marshal(jose.JSONWebKey{Key: &p384.PublicKey})
	if _, _, err := ParseJWK(raw); err == nil {
		t.Fatal("P-384 key accepted")
	}
}

func FuzzVerify(f *testing.F) {
	k, _ := NewKey()
	jkt, _ := Thumbprint(&k.PublicKey)
	p, _ := Sign(k, "GET", credURL, "tok", time.Now())
	f.Add(p)
	f.Add("e30.e30.")
	f.Fuzz(func(t *testing.T, proof string) {
		v := NewVerifier(0, nil)
		v.Verify(proof, Want{Method: "GET", URLs: []string{credURL}, JKT: jkt, Token: "tok"})
	})
}

// craft signs a proof with an arbitrary header, so the verifier's strict reading
// of the header is tested with valid signatures.
func craft(t testing.TB, k *ecdsa.PrivateKey, header map[string]any, payload []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	return craftRaw(t, k, h, payload)
}

// craftRaw signs a proof with exactly the header bytes h.
func craftRaw(t testing.TB, k *ecdsa.PrivateKey, h, payload []byte) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	input := enc(h) + "." + enc(payload)
	d := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + enc(sig)
}

func TestStrictHeader(t *testing.T) {
	k, jkt, v, now := setup(t)
	enc := base64.RawURLEncoding.EncodeToString
	point, err := k.PublicKey.Bytes() // 0x04 || x || y
	if err != nil {
		t.Fatal(err)
	}
	x, y := point[1:33], point[33:]
	pubJWK := func() map[string]any { return map[string]any{"kty": "EC", "crv": "P-256", "x": enc(x), "y": enc(y)} }
	w := Want{Method: "GET", URLs: []string{credURL}, JKT: jkt, Token: "tok"}
	jti := 0
	body := func() []byte {
		jti++
		b, _ := json.Marshal(Claims{HTM: "GET", HTU: credURL, IAT: now.Unix(), JTI: fmt.Sprint("j", jti), ATH: ATH("tok")})
		return b
	}
	// The same shape written by hand verifies: the reader is not tied to go-jose's output.
	if err := v.Verify(craft(t, k, map[string]any{"typ": Type, "alg": "ES256", "jwk": pubJWK()}, body()), w); err != nil {
		t.Fatalf("hand-made proof refused: %v", err)
	}
	withD := pubJWK()
	d, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	withD["d"] = enc(d)
	padded := pubJWK()
	padded["x"] = base64.URLEncoding.EncodeToString(x[:31]) // 31 bytes, and padded
	offCurve := pubJWK()
	offCurve["y"] = enc(x)
	p384 := pubJWK()
	p384["crv"] = "P-384"
	cases := map[string]map[string]any{
		"crit member":      {"typ": Type, "alg": "ES256", "jwk": pubJWK(), "crit": []string{"exp"}},
		"kid member":       {"typ": Type, "alg": "ES256", "jwk": pubJWK(), "kid": "k1"},
		"private jwk":      {"typ": Type, "alg": "ES256", "jwk": withD},
		"short coordinate": {"typ": Type, "alg": "ES256", "jwk": padded},
		"point off curve":  {"typ": Type, "alg": "ES256", "jwk": offCurve},
		"P-384 crv":        {"typ": Type, "alg": "ES256", "jwk": p384},
		"no jwk":           {"typ": Type, "alg": "ES256"},
		"alg ES384":        {"typ": Type, "alg": "ES384", "jwk": pubJWK()},
		"no typ":           {"alg": "ES256", "jwk": pubJWK()},
	}
	for name, h := range cases {
		if err := v.Verify(craft(t, k, h, body()), w); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
	good := craft(t, k, map[string]any{"typ": Type, "alg": "ES256", "jwk": pubJWK()}, body())
	other, _ := NewKey()
	parts := strings.Split(good, ".")
	extraClaim, _ := json.Marshal(map[string]any{"htm": "GET", "htu": credURL, "iat": now.Unix(), "jti": "jx", "ath": ATH("tok"), "nonce": "n"})
	for name, p := range map[string]string{
		"extra claim":     craft(t, k, map[string]any{"typ": Type, "alg": "ES256", "jwk": pubJWK()}, extraClaim),
		"four parts":      good + ".x",
		"payload swapped": parts[0] + "." + enc(body()) + "." + parts[2],
		// the header was checked and kept by now; the signature is still checked
		"known header, other signer": craft(t, other, map[string]any{"typ": Type, "alg": "ES256", "jwk": pubJWK()}, body()),
		"short signature":            parts[0] + "." + parts[1] + "." + parts[2][:40],
		"trailing in body":           craft(t, k, map[string]any{"typ": Type, "alg": "ES256", "jwk": pubJWK()}, append(body(), " {}"...)),
	} {
		if err := v.Verify(p, w); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
}

// TestHeaderMemo: a header is kept only once a proof carrying it verified, and
// only if it is short.
func TestHeaderMemo(t *testing.T) {
	k, jkt, v, now := setup(t)
	point, _ := k.PublicKey.Bytes()
	enc := base64.RawURLEncoding.EncodeToString
	jwk := fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":%q,"y":%q}`, enc(point[1:33]), enc(point[33:]))
	w := Want{Method: "GET", URLs: []string{credURL}, JKT: jkt, Token: "tok"}
	n := 0
	proof := func(header string) string {
		n++
		c, _ := json.Marshal(Claims{HTM: "GET", HTU: credURL, IAT: now.Unix(), JTI: fmt.Sprint("j", n), ATH: ATH("tok")})
		return craftRaw(t, k, []byte(header), c)
	}
	kept := func() int {
		v.headers.mu.Lock()
		defer v.headers.mu.Unlock()
		return len(v.headers.m)
	}
	plain := `{"typ":"dpop+jwt","alg":"ES256","jwk":` + jwk + `}`
	other, _ := NewKey()
	otherPoint, _ := other.PublicKey.Bytes()
	otherJWK := fmt.Sprintf(`{"kty":"EC","crv":"P-256","x":%q,"y":%q}`, enc(otherPoint[1:33]), enc(otherPoint[33:]))
	forged := proof(plain)
	forged = forged[:strings.LastIndex(forged, ".")+1] + strings.Split(craftRaw(t, other, []byte(plain), []byte("{}")), ".")[2]
	for name, p := range map[string]string{
		"bad signature":  forged,
		"key not bound":  craftRaw(t, other, []byte(`{"typ":"dpop+jwt","alg":"ES256","jwk":`+otherJWK+`}`), []byte(`{}`)),
		"refused header": proof(`{"typ":"dpop+jwt","alg":"ES384","jwk":` + jwk + `}`),
	} {
		if err := v.Verify(p, w); !errors.Is(err, ErrInvalid) || kept() != 0 {
			t.Fatalf("%s: %v, %d kept, want refused and none kept", name, err, kept())
		}
	}
	for range 2 {
		if err := v.Verify(proof(plain), w); err != nil || kept() != 1 {
			t.Fatalf("a daemon's header: %v, %d kept, want 1", err, kept())
		}
	}
	padded := `{"typ":"dpop+jwt",` + strings.Repeat(" ", maxMemoHeader) + `"alg":"ES256","jwk":` + jwk + `}`
	if err := v.Verify(proof(padded), w); err != nil || kept() != 1 {
		t.Fatalf("a padded header: %v, %d kept, want it checked and not kept", err, kept())
	}
}

// BenchmarkVerify is one proof check (the broker's per-request cost for agents).
func BenchmarkVerify(b *testing.B) {
	k, jkt, v, now := setup(b)
	w := Want{Method: "POST", URLs: []string{credURL}, JKT: jkt, Token: "tok"}
	proofs := make([]string, 0, 4096)
	for range cap(proofs) {
		p, _ := Sign(k, "POST", credURL, "tok", *now)
		proofs = append(proofs, p)
	}
	i := 0
	for b.Loop() {
		if i == len(proofs) { // fresh verifier: the jtis may be seen again
			b.StopTimer()
			v, i = NewVerifier(0, func() time.Time { return *now }), 0
			b.StartTimer()
		}
		if err := v.Verify(proofs[i], w); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestSignMatchesGoJose: Sign writes the compact JWS itself; the header must be
// the one go-jose writes for the key, byte for byte (the broker keeps proof
// headers by their exact encoding), and go-jose must verify the signature.
func TestSignMatchesGoJose(t *testing.T) {
	k, jkt, v, now := setup(t)
	p, err := Sign(k, "POST", credURL, "tok", *now)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{EmbedJWK: true}).WithType(Type))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := js.Sign([]byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	theirs, _ := obj.CompactSerialize()
	if mine, want := strings.Split(p, ".")[0], strings.Split(theirs, ".")[0]; mine != want {
		t.Fatalf("header %s, go-jose's %s", mine, want)
	}
	parsed, err := jose.ParseSignedCompact(p, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := parsed.Verify(&k.PublicKey)
	if err != nil {
		t.Fatalf("go-jose does not verify the proof: %v", err)
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil || c.HTM != "POST" || c.HTU != credURL || c.IAT != now.Unix() || len(c.JTI) != 32 || c.ATH != ATH("tok") {
		t.Fatalf("claims %+v, %v", c, err)
	}
	// Another key's signature over the same header and claims is refused
	// (before the proof itself is used, so that it is not refused as a replay).
	other, _ := NewKey()
	q, _ := Sign(other, "POST", credURL, "tok", *now)
	forged := strings.Join(strings.Split(p, ".")[:2], ".") + "." + strings.Split(q, ".")[2]
	if _, err := parsed.Verify(&other.PublicKey); err == nil {
		t.Fatal("go-jose verified the proof with another key")
	}
	if err := v.Verify(forged, Want{Method: "POST", URLs: []string{credURL}, JKT: jkt, Token: "tok"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a proof with another key's signature: %v, want ErrInvalid", err)
	}
	if err := v.Verify(p, Want{Method: "POST", URLs: []string{credURL}, JKT: jkt, Token: "tok"}); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSign is one proof made (the daemon's per-request cost).
func BenchmarkSign(b *testing.B) {
	k, _, _, now := setup(b)
	for b.Loop() {
		if _, err := Sign(k, "POST", credURL, "tok", *now); err != nil {
			b.Fatal(err)
		}
	}
}
