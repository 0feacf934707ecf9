package enclave

import "testing"

// TestGoldenDerivation pins the keys derived from the seed 00 01 … 1f. A
// change here means every deployed enclave would derive different keys (new
// JWKS, new wallets, unreadable credentials): it must never happen silently.
// The kid commits to the whole public key, so pinning it pins the key.
func TestGoldenDerivation(t *testing.T) {
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(i)
	}
	e := &Enclave{sec: &secrets{seed: seed}, cache: map[string]*key{}}
	omni := "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"
	for _, v := range []struct{ path, kid, publicPrefix string }{
		{"issuer/jwt/v1", "RhC-ieixCYl2Dsk0", "04bfc52218630f718e8058240ecb8ac2ca480d1e5aa15fd86999f31fe63c1c47"},
		{"ledger/v1", "irLRZuRlEay1W_op", "2af03841946ea168007c72af74c2e9b1a38c970153a655218d1297ca29b87bcb"},
		{"oidc/issuer/v1", "dfXs58YHlJO6dHkT", "042b1660b041f9f97666451f10d0db7a8a2a7ffe51191220405f237886db6608"},
		{"shielding/v1", "XkhSA6S_-Cr3YHrq", "56b07edb7c7734c61caf720d08017a331277e6919c34d1aae93a239093cd028a"},
		{"dkim/example.com/v1", "d0QrI78UqPKQ_gPa", "6157cb91a41334fc93b34055976cd39428589467506ce3575d9b0fa7f47729d8"},
		{"wallet/eth/" + omni + "/v1", "Tb4T5JSI844fBIOw", "028e0dadc03805667ca4c4f403754d46a85d278047b45d71168a0d557bde111d67"},
	} {
		ki, err := e.PublicKey(v.path)
		if err != nil {
			t.Fatalf("PublicKey(%s): %v", v.path, err)
		}
		if ki.Kid != v.kid || len(ki.Public) < len(v.publicPrefix) || ki.Public[:len(v.publicPrefix)] != v.publicPrefix {
			t.Errorf("%s: kid %s public %.64s…, want kid %s public %s…", v.path, ki.Kid, ki.Public, v.kid, v.publicPrefix)
		}
	}
	if addr, err := e.WalletAddress(omni); err != nil || addr != "0xCB7300a41b9DC9de05750d73502a301495c958E8" {
		t.Errorf("WalletAddress = %s, %v", addr, err)
	}
}
