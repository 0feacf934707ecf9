package slip10

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Seed length limits from SLIP-0010 (128 to 512 bits).
const (
	MinSeedLen = 16
	MaxSeedLen = 64
)

// Errors returned by this package; match them with [errors.Is].
var (
	// ErrInvalidSeed is returned when a seed is outside 16..64 bytes.
	ErrInvalidSeed = errors.New("invalid seed")
	// ErrInvalidCurve is returned for a Curve value that is not supported.
	ErrInvalidCurve = errors.New("unsupported curve")
	// ErrNonHardened is returned when non-hardened derivation is requested
	// on ed25519, which SLIP-0010 does not define.
	ErrNonHardened = errors.New("ed25519 supports only hardened derivation")
	// ErrZeroedNode is returned when deriving from a nil, zero-value or
	// zeroed Node.
	ErrZeroedNode = errors.New("node is nil, uninitialized or zeroed")
)

// Node is one SLIP-0010 extended private key: a curve, a 32-byte private key
// and a 32-byte chain code.
//
// A Node never prints its key material: String, GoString and Format all
// return "slip10.Node(<curve>, redacted)".
type Node struct {
	curve     Curve
	key       [32]byte
	chainCode [32]byte
}

// NewMaster derives the SLIP-0010 master node for curve c from seed, which
// must be 16 to 64 bytes long.
func NewMaster(c Curve, seed []byte) (*Node, error) {
	if !c.valid() {
		return nil, fmt.Errorf("slip10: new master: %w: %d", ErrInvalidCurve, int(c))
	}
	if len(seed) < MinSeedLen || len(seed) > MaxSeedLen {
		return nil, fmt.Errorf("slip10: new master: %w: got %d bytes, want %d to %d",
			ErrInvalidSeed, len(seed), MinSeedLen, MaxSeedLen)
	}
	i := hmacSHA512(c.hmacKey(), seed)
	defer clear(i[:])
	for {
		n, ok := masterFromI(c, &i)
		if ok {
			return n, nil
		}
		// IL was 0 or >= n: SLIP-0010 retries with S := I.
		i = hmacSHA512(c.hmacKey(), i[:])
	}
}

// masterFromI builds a master node from I = IL || IR and reports whether IL
// is a valid private key for c.
func masterFromI(c Curve, i *[64]byte) (*Node, bool) {
	n := &Node{curve: c}
	copy(n.key[:], i[:32])
	copy(n.chainCode[:], i[32:])
	if c == Ed25519 {
		return n, true
	}
	var zero [32]byte
	if _, ok := c.addScalar(&n.key, &zero); !ok {
		n.Zero()
		return nil, false
	}
	return n, true
}

// Derive returns the child of n at index. Indexes >= [Hardened] select
// hardened children. For ed25519 only hardened indexes are allowed; for
// nist256p1 and secp256k1 both kinds are supported.
func (n *Node) Derive(index uint32) (*Node, error) {
	if n == nil || !n.curve.valid() {
		return nil, fmt.Errorf("slip10: derive %s: %w", formatIndex(index), ErrZeroedNode)
	}
	if index < Hardened && n.curve == Ed25519 {
		return nil, fmt.Errorf("slip10: derive %s: %w", formatIndex(index), ErrNonHardened)
	}
	data, err := n.childData(index)
	if err != nil {
		return nil, fmt.Errorf("slip10: derive %s: %w", formatIndex(index), err)
	}
	defer clear(data)
	i := hmacSHA512(n.chainCode[:], data)
	defer clear(i[:])
	if n.curve == Ed25519 {
		child := &Node{curve: n.curve}
		copy(child.key[:], i[:32])
		copy(child.chainCode[:], i[32:])
		return child, nil
	}
	return n.deriveECDSA(index, &i), nil
}

// childData returns the HMAC input for child index: 0x00 || ser256(k) ||
// ser32(i) for hardened children and serP(point(k)) || ser32(i) otherwise.
func (n *Node) childData(index uint32) ([]byte, error) {
	data := make([]byte, 37)
	if index >= Hardened {
		copy(data[1:33], n.key[:])
	} else {
		pub := n.curve.publicKey(&n.key)
		if len(pub) != 33 {
			return nil, errors.New("parent private key is invalid")
		}
		copy(data, pub)
	}
	binary.BigEndian.PutUint32(data[33:], index)
	return data, nil
}

// deriveECDSA finishes child derivation on an ECDSA curve from I = IL || IR,
// applying the SLIP-0010 retry rule while the child key is invalid.
func (n *Node) deriveECDSA(index uint32, i *[64]byte) *Node {
	child := &Node{curve: n.curve}
	var retry [37]byte
	defer clear(retry[:])
	for {
		var il [32]byte
		copy(il[:], i[:32])
		key, ok := n.curve.addScalar(&il, &n.key)
		clear(il[:])
		if ok {
			child.key = key
			copy(child.chainCode[:], i[32:])
			return child
		}
		// Invalid key: I = HMAC-SHA512(c_par, 0x01 || IR || ser32(i)).
		retry[0] = 0x01
		copy(retry[1:33], i[32:])
		binary.BigEndian.PutUint32(retry[33:], index)
		*i = hmacSHA512(n.chainCode[:], retry[:])
	}
}

// DerivePath derives the descendant of n along indexes, one [Node.Derive]
// step per index. Intermediate nodes are zeroed. An empty list returns a copy
// of n.
func (n *Node) DerivePath(indexes []uint32) (*Node, error) {
	if n == nil || !n.curve.valid() {
		return nil, fmt.Errorf("slip10: derive path: %w", ErrZeroedNode)
	}
	cur := &Node{curve: n.curve, key: n.key, chainCode: n.chainCode}
	for depth, index := range indexes {
		next, err := cur.Derive(index)
		cur.Zero()
		if err != nil {
			return nil, fmt.Errorf("slip10: derive path at depth %d: %w", depth, err)
		}
		cur = next
	}
	return cur, nil
}

// Curve returns the curve of n. It returns 0 for a zeroed node.
func (n *Node) Curve() Curve {
	return n.curve
}

// PrivateKey returns a copy of the 32-byte private key of n. For ed25519 this
// is the RFC 8032 seed; for nist256p1 and secp256k1 it is the big-endian
// scalar.
func (n *Node) PrivateKey() [32]byte {
	return n.key
}

// ChainCode returns a copy of the 32-byte chain code of n.
func (n *Node) ChainCode() [32]byte {
	return n.chainCode
}

// PublicKey returns the SLIP-0010 serialization of the public key of n:
// 0x00 || 32-byte key for ed25519, and the 33-byte compressed SEC 1 point for
// nist256p1 and secp256k1. It returns nil for a zeroed node.
func (n *Node) PublicKey() []byte {
	return n.curve.publicKey(&n.key)
}

// Zero overwrites the private key and chain code of n with zeros and marks
// the node unusable: later derivations fail and PublicKey returns nil.
func (n *Node) Zero() {
	if n == nil {
		return
	}
	clear(n.key[:])
	clear(n.chainCode[:])
	n.curve = 0
}

// String returns "slip10.Node(<curve>, redacted)" and never key material.
// It has a value receiver so that printing a Node value is redacted too.
func (n Node) String() string {
	return "slip10.Node(" + n.curve.String() + ", redacted)"
}

// GoString implements [fmt.GoStringer] with the same redacted text as String.
func (n Node) GoString() string {
	return n.String()
}

// Format implements [fmt.Formatter] so that every verb, including %d and %x,
// prints the redacted text instead of the key bytes.
func (n Node) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, n.String())
}

// hmacSHA512 returns HMAC-SHA512(key, data).
func hmacSHA512(key, data []byte) [64]byte {
	m := hmac.New(sha512.New, key)
	m.Write(data)
	var out [64]byte
	m.Sum(out[:0])
	return out
}

// formatIndex renders index in BIP-32 notation, e.g. "5" or "5H".
func formatIndex(index uint32) string {
	if index >= Hardened {
		return fmt.Sprintf("index %dH", index-Hardened)
	}
	return fmt.Sprintf("index %d", index)
}
