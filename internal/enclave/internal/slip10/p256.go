package slip10

import (
	"encoding/binary"
	"math/bits"
)

// uint256 is a 256-bit unsigned integer as four little-endian 64-bit limbs.
type uint256 [4]uint64

// p256Order is the order n of the NIST P-256 base point:
// 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551.
var p256Order = uint256{
	0xf3b9cac2fc632551,
	0xbce6faada7179e84,
	0xffffffffffffffff,
	0xffffffff00000000,
}

// loadUint256 parses b as a big-endian 256-bit integer.
func loadUint256(b *[32]byte) uint256 {
	return uint256{
		binary.BigEndian.Uint64(b[24:32]),
		binary.BigEndian.Uint64(b[16:24]),
		binary.BigEndian.Uint64(b[8:16]),
		binary.BigEndian.Uint64(b[0:8]),
	}
}

// bytes serializes x as 32 big-endian bytes.
func (x *uint256) bytes() [32]byte {
	var b [32]byte
	binary.BigEndian.PutUint64(b[0:8], x[3])
	binary.BigEndian.PutUint64(b[8:16], x[2])
	binary.BigEndian.PutUint64(b[16:24], x[1])
	binary.BigEndian.PutUint64(b[24:32], x[0])
	return b
}

// add returns x + y and the carry out (0 or 1).
func (x *uint256) add(y *uint256) (uint256, uint64) {
	var z uint256
	var carry uint64
	for i := range z {
		z[i], carry = bits.Add64(x[i], y[i], carry)
	}
	return z, carry
}

// sub returns x - y and the borrow out (0 or 1).
func (x *uint256) sub(y *uint256) (uint256, uint64) {
	var z uint256
	var borrow uint64
	for i := range z {
		z[i], borrow = bits.Sub64(x[i], y[i], borrow)
	}
	return z, borrow
}

// isZero returns 1 if x is zero and 0 otherwise, without branching on x.
func (x *uint256) isZero() uint64 {
	acc := x[0] | x[1] | x[2] | x[3]
	// acc|-acc has its top bit set exactly when acc != 0.
	return 1 ^ ((acc | -acc) >> 63)
}

// p256AddScalar implements Curve.addScalar for NIST P-256. The arithmetic is
// branch-free in the key values; only the final validity result is branched
// on, as SLIP-0010 requires.
func p256AddScalar(il, k *[32]byte) ([32]byte, bool) {
	a, b := loadUint256(il), loadUint256(k)
	_, ilNotBelowN := a.sub(&p256Order)
	ilNotBelowN ^= 1 // borrow == 0 means il >= n
	sum, carry := a.add(&b)
	reduced, borrow := sum.sub(&p256Order)
	// Use the reduced value when sum >= n, i.e. the addition carried out of
	// 256 bits or the subtraction did not borrow. Valid inputs are both < n,
	// so one conditional subtraction is enough.
	mask := -(carry | (borrow ^ 1))
	var z uint256
	for i := range z {
		z[i] = (reduced[i] & mask) | (sum[i] &^ mask)
	}
	invalid := ilNotBelowN | z.isZero()
	out := z.bytes()
	clear(a[:])
	clear(b[:])
	clear(sum[:])
	clear(reduced[:])
	clear(z[:])
	if invalid != 0 {
		clear(out[:])
		return out, false
	}
	return out, true
}
