package enclave

import (
	"crypto/sha256"
	"testing"

	"github.com/agentkeys/agentkeys/internal/seal"
)

func benchEnclave(b *testing.B) *Enclave {
	b.Helper()
	return mustOpen(b, testConfig(b))
}

func BenchmarkSignEd25519(b *testing.B) {
	e := benchEnclave(b)
	msg := make([]byte, 256)
	for b.Loop() {
		if _, err := e.SignEd25519("ledger/v1", msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignES256(b *testing.B) {
	e := benchEnclave(b)
	input := make([]byte, 300) // a typical JWS signing input
	for b.Loop() {
		if _, err := e.SignES256("issuer/jwt/v1", input); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignWallet(b *testing.B) {
	e := benchEnclave(b)
	omni := testOmni(1)
	hash := sha256.Sum256([]byte("entry"))
	if _, err := e.WalletAddress(omni); err != nil { // cache the key
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := e.SignWallet(omni, hash); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublicKeyFreshWallet measures derivation: every iteration asks for
// the wallet of an account the enclave has not seen.
func BenchmarkPublicKeyFreshWallet(b *testing.B) {
	e := benchEnclave(b)
	paths := make([]string, 0, 1<<14)
	for i := range cap(paths) {
		paths = append(paths, "wallet/eth/"+testOmni(i)+"/v1")
	}
	i := 0
	for b.Loop() {
		if i == len(paths) { // never repeat a path: drop the cache instead
			b.StopTimer()
			e.cacheMu.Lock()
			for p, k := range e.cache {
				if k.kind == kindSecp256k1 {
					k.zero()
					delete(e.cache, p)
				}
			}
			e.cacheMu.Unlock()
			i = 0
			b.StartTimer()
		}
		if _, err := e.PublicKey(paths[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkCheckSealed measures one HPKE open to the shielding key: what a
// store, or the first read of a ciphertext the enclave holds no sealed copy
// of, pays. The copy is dropped before every iteration.
func BenchmarkCheckSealed(b *testing.B) {
	e := benchEnclave(b)
	info := []byte("owner|*|service")
	ct, err := seal.To(publicBytes(b, e, "shielding/v1"), info, make([]byte, 64))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		b.StopTimer()
		e.reads.mu.Lock()
		clear(e.reads.entries)
		e.reads.order.Init()
		e.reads.bytes = 0
		e.reads.mu.Unlock()
		b.StartTimer()
		if err := e.CheckSealed("shielding/v1", info, ct); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckSealedCached measures what a read pays to get at a credential
// whose sealed copy the enclave holds: SHA-256 of the ciphertext and one
// AES-256-GCM open.
func BenchmarkCheckSealedCached(b *testing.B) {
	e := benchEnclave(b)
	info := []byte("owner|*|service")
	ct, err := seal.To(publicBytes(b, e, "shielding/v1"), info, make([]byte, 64))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := e.CheckSealed("shielding/v1", info, ct); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReseal(b *testing.B) {
	e := benchEnclave(b)
	info := []byte("owner|*|service")
	ct, err := seal.To(publicBytes(b, e, "shielding/v1"), info, make([]byte, 64))
	if err != nil {
		b.Fatal(err)
	}
	recipient := mustClientKey(b).PublicKey().Bytes()
	for b.Loop() {
		if _, err := e.Reseal("shielding/v1", info, ct, recipient, []byte("read")); err != nil {
			b.Fatal(err)
		}
	}
}
