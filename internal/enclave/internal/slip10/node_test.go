package slip10

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestEd25519NonHardenedFails(t *testing.T) {
	master, err := NewMaster(Ed25519, testSeed())
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint32{0, 1, Hardened - 1} {
		if _, err := master.Derive(idx); !errors.Is(err, ErrNonHardened) {
			t.Errorf("Derive(%d) error = %v, want ErrNonHardened", idx, err)
		}
	}
	if _, err := master.DerivePath([]uint32{Hardened, 5}); !errors.Is(err, ErrNonHardened) {
		t.Errorf("DerivePath with non-hardened step error = %v, want ErrNonHardened", err)
	}
}

func TestNewMasterSeedLength(t *testing.T) {
	for _, n := range []int{0, 15, 65, 128} {
		if _, err := NewMaster(Ed25519, make([]byte, n)); !errors.Is(err, ErrInvalidSeed) {
			t.Errorf("NewMaster with %d-byte seed error = %v, want ErrInvalidSeed", n, err)
		}
	}
	for _, n := range []int{16, 32, 64} {
		for _, c := range []Curve{Ed25519, NIST256p1, Secp256k1} {
			if _, err := NewMaster(c, make([]byte, n)); err != nil {
				t.Errorf("NewMaster(%s, %d-byte seed): %v", c, n, err)
			}
		}
	}
}

func TestInvalidCurve(t *testing.T) {
	for _, c := range []Curve{0, 4, -1} {
		if _, err := NewMaster(c, testSeed()); !errors.Is(err, ErrInvalidCurve) {
			t.Errorf("NewMaster(%d) error = %v, want ErrInvalidCurve", int(c), err)
		}
		if got := c.String(); !strings.HasPrefix(got, "Curve(") {
			t.Errorf("Curve(%d).String() = %q", int(c), got)
		}
	}
}

func TestCurveString(t *testing.T) {
	for c, want := range map[Curve]string{Ed25519: "ed25519", NIST256p1: "nist256p1", Secp256k1: "secp256k1"} {
		if got := c.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(c), got, want)
		}
	}
}

func TestNodeFormattingRedacted(t *testing.T) {
	for _, c := range []Curve{Ed25519, NIST256p1, Secp256k1} {
		node, err := DeriveString(c, testSeed(), "oidc/issuer/v1")
		if err != nil {
			t.Fatal(err)
		}
		key, cc := node.PrivateKey(), node.ChainCode()
		secrets := []string{hex.EncodeToString(key[:]), hex.EncodeToString(cc[:]), fmt.Sprint(key[0], " ", key[1], " ", key[2])}
		out := fmt.Sprintf("%v %+v %#v %s %x %X %d %q | %v %+v %#v %s %x %d | %v",
			node, node, node, node, node, node, node, node,
			*node, *node, *node, *node, *node, *node, []*Node{node})
		for _, s := range secrets {
			if strings.Contains(strings.ToLower(out), s) {
				t.Errorf("%s: formatted node leaks %s: %s", c, s, out)
			}
		}
		want := "slip10.Node(" + c.String() + ", redacted)"
		if !strings.Contains(out, want) {
			t.Errorf("%s: formatted node %q does not contain %q", c, out, want)
		}
	}
}

func TestZero(t *testing.T) {
	for _, c := range []Curve{Ed25519, NIST256p1, Secp256k1} {
		node, err := DeriveString(c, testSeed(), "ledger/v1")
		if err != nil {
			t.Fatal(err)
		}
		node.Zero()
		if node.PrivateKey() != [32]byte{} || node.ChainCode() != [32]byte{} {
			t.Errorf("%s: Zero left key material", c)
		}
		if node.PublicKey() != nil {
			t.Errorf("%s: PublicKey after Zero is not nil", c)
		}
		if _, err := node.Derive(Hardened); !errors.Is(err, ErrZeroedNode) {
			t.Errorf("%s: Derive after Zero error = %v, want ErrZeroedNode", c, err)
		}
		if _, err := node.DerivePath(nil); !errors.Is(err, ErrZeroedNode) {
			t.Errorf("%s: DerivePath after Zero error = %v, want ErrZeroedNode", c, err)
		}
	}
	var nilNode *Node
	nilNode.Zero() // must not panic
	if _, err := nilNode.Derive(Hardened); !errors.Is(err, ErrZeroedNode) {
		t.Errorf("nil Derive error = %v, want ErrZeroedNode", err)
	}
	if _, err := (&Node{}).Derive(Hardened); !errors.Is(err, ErrZeroedNode) {
		t.Errorf("zero-value Derive error = %v, want ErrZeroedNode", err)
	}
}

// TestDerivePathLeavesParent checks that DerivePath neither modifies nor
// zeroes its receiver, and that an empty path yields an independent copy.
func TestDerivePathLeavesParent(t *testing.T) {
	master, err := NewMaster(Secp256k1, testSeed())
	if err != nil {
		t.Fatal(err)
	}
	before := *master
	if _, err := master.DerivePath([]uint32{Hardened, 1, Hardened | 2}); err != nil {
		t.Fatal(err)
	}
	if *master != before {
		t.Fatal("DerivePath modified its receiver")
	}
	cp, err := master.DerivePath(nil)
	if err != nil {
		t.Fatal(err)
	}
	cp.Zero()
	if *master != before {
		t.Fatal("zeroing the DerivePath(nil) copy zeroed the receiver")
	}
}

func TestDistinctPathsDistinctKeys(t *testing.T) {
	seen := map[[32]byte]string{}
	for _, pc := range pathCases {
		node, err := DeriveString(pc.curve, testSeed(), pc.path)
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := seen[node.PrivateKey()]; ok {
			t.Errorf("%s and %s derived the same key", prev, pc.path)
		}
		seen[node.PrivateKey()] = pc.path
	}
}

func TestPublicKeyLengths(t *testing.T) {
	for c, want := range map[Curve]int{Ed25519: 33, NIST256p1: 33, Secp256k1: 33} {
		node, err := NewMaster(c, testSeed())
		if err != nil {
			t.Fatal(err)
		}
		pub := node.PublicKey()
		if len(pub) != want {
			t.Errorf("%s: public key is %d bytes, want %d", c, len(pub), want)
		}
		if c == Ed25519 && pub[0] != 0 {
			t.Errorf("ed25519 public key prefix = %#x, want 0x00", pub[0])
		}
		if c != Ed25519 && pub[0] != 2 && pub[0] != 3 {
			t.Errorf("%s: public key prefix = %#x, want 0x02 or 0x03", c, pub[0])
		}
	}
}
