package apiv1

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/dpop"
)

func signed(t *testing.T) PairRequest {
	t.Helper()
	k, err := dpop.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	jwk, _ := dpop.PublicJWK(k)
	r := PairRequest{Owner: "0xabc", Alias: "bot", Scope: []string{"openai", "github"}, ProofJWK: string(jwk),
		HPKEPublic: "cHVi", ValidUntil: time.Now().Add(time.Minute).Unix()}
	if err := SignPairRequest(&r, k); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSignVerify(t *testing.T) {
	r := signed(t)
	jkt, err := VerifyPairRequest(r)
	if err != nil || len(jkt) != 43 {
		t.Fatalf("Verify: %q %v", jkt, err)
	}
	for name, mut := range map[string]func(*PairRequest){
		"alias": func(r *PairRequest) { r.Alias = "eve" },
		"scope": func(r *PairRequest) { r.Scope = append(r.Scope, "stripe") },
		"owner": func(r *PairRequest) { r.Owner = "0xdef" },
		"hpke":  func(r *PairRequest) { r.HPKEPublic = "b3RoZXI=" },
		"until": func(r *PairRequest) { r.ValidUntil++ },
		"ttl":   func(r *PairRequest) { r.TTLSeconds = 60 },
		"sig":   func(r *PairRequest) { r.Sig = r.Sig[:10] },
		"keyswap": func(r *PairRequest) {
			o := signed(t)
			r.ProofJWK = o.ProofJWK
		},
	} {
		c := r
		c.Scope = append([]string(nil), r.Scope...)
		mut(&c)
		if _, err := VerifyPairRequest(c); err == nil {
			t.Errorf("changed %s: still verifies", name)
		}
	}
}

func TestVVC(t *testing.T) {
	r := signed(t)
	nonce := bytes.Repeat([]byte{7}, VVCNonceSize)
	v := VVC(nonce, r.Sig)
	raw, _ := base64.RawURLEncoding.DecodeString(r.Sig)
	h := sha256.Sum256(append(bytes.Clone(nonce), raw...))
	if want := fmt.Sprintf("%06d", binary.BigEndian.Uint64(h[:8])%1_000_000); v != want || len(v) != 6 || VVCHash(nonce, r.Sig) != h {
		t.Fatalf("VVC %q want %q", v, want)
	}
	// Only the broker's contribution changes: the VVC does.
	seen := map[string]bool{v: true}
	for i := range byte(3) {
		seen[VVC(bytes.Repeat([]byte{i}, VVCNonceSize), r.Sig)] = true
	}
	if len(seen) != 4 {
		t.Fatalf("four nonces over one signature gave %d VVCs", len(seen))
	}
	if a, b := VVC(nonce, signed(t).Sig), VVC(nonce, signed(t).Sig); a == v && b == v { // two fresh requests
		t.Fatal("VVCs of different requests keep colliding")
	}
}

func TestFingerprint(t *testing.T) {
	jkt, err := VerifyPairRequest(signed(t))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(jkt)
	x := fmt.Sprintf("%x", raw[:8])
	if fp := Fingerprint(jkt); fp != x[:4]+"-"+x[4:8]+"-"+x[8:12]+"-"+x[12:] {
		t.Fatalf("fingerprint %q of %x", fp, raw[:8])
	}
	other, _ := VerifyPairRequest(signed(t))
	if Fingerprint(other) == Fingerprint(jkt) {
		t.Fatal("two keys, one fingerprint")
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("owner", "bot", "openai", `{"kty":"EC"}`, "sig")
	f.Fuzz(func(t *testing.T, owner, alias, scope, jwk, sig string) {
		VerifyPairRequest(PairRequest{Owner: owner, Alias: alias, Scope: []string{scope}, ProofJWK: jwk, Sig: sig})
	})
}
