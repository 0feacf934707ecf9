package slip10

import "testing"

func BenchmarkDeriveString(b *testing.B) {
	seed := testSeed()
	cases := []struct {
		name, path string
		curve      Curve
	}{
		{"ed25519/3seg", "oidc/issuer/v1", Ed25519},
		{"nist256p1/3seg", "oidc/issuer/v1", NIST256p1},
		{"secp256k1/3seg", "oidc/issuer/v1", Secp256k1},
		{"ed25519/wallet4seg", walletPath, Ed25519},
		{"nist256p1/wallet4seg", walletPath, NIST256p1},
		{"secp256k1/wallet4seg", walletPath, Secp256k1},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				node, err := DeriveString(bc.curve, seed, bc.path)
				if err != nil {
					b.Fatal(err)
				}
				node.Zero()
			}
		})
	}
}

func BenchmarkPublicKey(b *testing.B) {
	for _, c := range []Curve{Ed25519, NIST256p1, Secp256k1} {
		node, err := DeriveString(c, testSeed(), "oidc/issuer/v1")
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.String(), func(b *testing.B) {
			for b.Loop() {
				_ = node.PublicKey()
			}
		})
	}
}
