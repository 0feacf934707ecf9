package enclave

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/mlkem"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/enclave/internal/slip10"
	"github.com/agentkeys/agentkeys/internal/wallet"
)

// Algorithm names used in KeyInfo.Alg.
const (
	AlgEdDSA     = "EdDSA"
	AlgES256     = "ES256"
	AlgES256K    = "ES256K"
	AlgShielding = "HPKE-MLKEM768X25519"
	AlgChannel   = "HKDF-AES256GCM" // symmetric: no public part
	AlgPrivate   = "HKDF-AES256GCM" // symmetric (pair/*): no public part
	AlgKeyBox    = "HKDF-AES256GCM" // symmetric (keybox/*): no public part
)

const (
	shieldingX25519Info = "agentkeys/shielding/x25519/v1"
	shieldingMLKEMInfo  = "agentkeys/shielding/mlkem768/v1"

	// Path limits, the same as slip10.ParsePath enforces, checked here so
	// that an over-long path is an ErrUnknownPath like any other bad path.
	maxPathSegments = 16
	maxSegmentLen   = 128
	maxPathLen      = maxPathSegments * (maxSegmentLen + 1)
)

// maxCached bounds the key cache. Beyond it keys are derived per call and
// zeroed right after use, so arbitrary paths cannot grow memory without
// bound. A variable so that tests can lower it.
var maxCached = 1 << 16

// kind is the type of key a path names.
type kind int

const (
	kindShielding kind = iota + 1
	kindEd25519
	kindP256
	kindSecp256k1
	kindChannel // symmetric root of the per-session response channels (session/*)
	kindPrivate // symmetric root of private ledger fields (pair/*)
	kindKeyBox  // symmetric root of enclave-generated keys kept sealed on the ledger (keybox/*)
)

func (k kind) alg() string {
	switch k {
	case kindShielding:
		return AlgShielding
	case kindEd25519:
		return AlgEdDSA
	case kindP256:
		return AlgES256
	case kindSecp256k1:
		return AlgES256K
	case kindChannel:
		return AlgChannel
	case kindPrivate:
		return AlgPrivate
	case kindKeyBox:
		return AlgKeyBox
	}
	return "unknown"
}

// key is one derived key. Exactly one of the private fields is set.
type key struct {
	kind    kind
	info    attest.KeyInfo
	ed      ed25519.PrivateKey
	p256    *ecdsa.PrivateKey
	k1      *secp256k1.PrivateKey
	address string // wallet keys: EIP-55 address
	shield  hpke.PrivateKey
	channel []byte // symmetric root (32 bytes): session channels, private fields
}

// zero overwrites what can be overwritten and drops the rest.
func (k *key) zero() {
	clear(k.channel)
	k.channel = nil
	clear(k.ed)
	k.ed = nil
	if k.p256 != nil {
		// D is deprecated for reading keys, but it is the only handle on
		// the scalar's memory; the stdlib's internal copy is unreachable.
		//lint:ignore SA1019 zeroing, not reading, the scalar
		if d := k.p256.D; d != nil {
			clear(d.Bits())
		}
		k.p256 = nil
	}
	if k.k1 != nil {
		k.k1.Zero()
		k.k1 = nil
	}
	k.shield = nil
}

// parsePath validates path and returns the kind of key it names.
func parsePath(path string) (kind, error) {
	if path == "" {
		return 0, fmt.Errorf("%w: empty path: use e.g. ledger/v1", ErrUnknownPath)
	}
	if len(path) > maxPathLen {
		return 0, fmt.Errorf("%w: path is %d bytes, the limit is %d", ErrUnknownPath, len(path), maxPathLen)
	}
	segs := strings.Split(path, "/")
	if len(segs) > maxPathSegments {
		return 0, fmt.Errorf("%w: path has %d segments, the limit is %d", ErrUnknownPath, len(segs), maxPathSegments)
	}
	for _, s := range segs {
		if s == "" {
			return 0, fmt.Errorf("%w: %q has an empty segment: segments are separated by single slashes, with none leading or trailing", ErrUnknownPath, path)
		}
		if len(s) > maxSegmentLen {
			return 0, fmt.Errorf("%w: a segment of %q is %d bytes, the limit is %d", ErrUnknownPath, path, len(s), maxSegmentLen)
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._-:@", c) >= 0) {
				return 0, fmt.Errorf("%w: %q: segments may use only a-z, 0-9 and . _ - : @ (lowercase, so one name has one key)", ErrUnknownPath, path)
			}
		}
	}
	if len(segs) < 2 {
		return 0, fmt.Errorf("%w: %q needs at least a purpose and a version segment, e.g. %s/v1", ErrUnknownPath, path, segs[0])
	}
	switch segs[0] {
	case "shielding":
		return kindShielding, nil
	case "ledger", "dkim":
		return kindEd25519, nil
	case "issuer", "oidc":
		return kindP256, nil
	case "session":
		return kindChannel, nil
	case "pair":
		return kindPrivate, nil
	case "keybox":
		return kindKeyBox, nil
	case "wallet":
		if len(segs) != 4 || segs[1] != "eth" || !validOmni(segs[2]) || !validVersion(segs[3]) {
			return 0, fmt.Errorf("%w: %q: wallet paths are exactly wallet/eth/<omni: 64 lowercase hex>/v<n>", ErrUnknownPath, path)
		}
		return kindSecp256k1, nil
	}
	return 0, fmt.Errorf("%w: %q: the first segment must be one of shielding, ledger, dkim, issuer, oidc, wallet, session, pair, keybox", ErrUnknownPath, path)
}

// validOmni reports whether s is an account id: 64 lowercase hex digits.
func validOmni(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validVersion reports whether s is "v" followed by a positive decimal
// number without leading zeros.
func validVersion(s string) bool {
	if len(s) < 2 || len(s) > 10 || s[0] != 'v' || s[1] == '0' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// derive derives the key at path from the seed. The caller holds e.mu for
// reading and has validated path as kind k.
func (e *Enclave) derive(path string, k kind) (*key, error) {
	curve := slip10.Ed25519
	switch k {
	case kindP256:
		curve = slip10.NIST256p1
	case kindSecp256k1:
		curve = slip10.Secp256k1
	}
	node, err := slip10.DeriveString(curve, e.sec.seed[:], path)
	if err != nil {
		return nil, fmt.Errorf("enclave: derive %s: %w", path, err)
	}
	defer node.Zero()
	priv := node.PrivateKey()
	defer clear(priv[:])

	out := &key{kind: k}
	var public []byte
	switch k {
	case kindEd25519:
		out.ed = ed25519.NewKeyFromSeed(priv[:])
		public = out.ed.Public().(ed25519.PublicKey)
		// SLIP-0010 publishes ed25519 keys as 0x00 || key.
		if np := node.PublicKey(); len(np) != 33 || !bytes.Equal(np[1:], public) {
			out.zero()
			return nil, fmt.Errorf("enclave: derive %s: SLIP-0010 and ed25519 public keys disagree", path)
		}
	case kindP256:
		out.p256, err = ecdsa.ParseRawPrivateKey(elliptic.P256(), priv[:])
		if err != nil {
			return nil, fmt.Errorf("enclave: derive %s: P-256 key: %w", path, err)
		}
		public, err = out.p256.PublicKey.Bytes()
		if err != nil {
			out.zero()
			return nil, fmt.Errorf("enclave: derive %s: P-256 public key: %w", path, err)
		}
	case kindSecp256k1:
		out.k1 = secp256k1.PrivKeyFromBytes(priv[:])
		pub := out.k1.PubKey()
		public = pub.SerializeCompressed()
		out.address = wallet.Address(pub)
	case kindChannel:
		out.channel, err = hkdf.Key(sha256.New, priv[:], nil, "agentkeys/session-channel/root/v1", 32)
		if err != nil {
			return nil, fmt.Errorf("enclave: derive %s: %w", path, err)
		}
	case kindPrivate:
		out.channel, err = hkdf.Key(sha256.New, priv[:], nil, "agentkeys/private/root/v1", 32)
		if err != nil {
			return nil, fmt.Errorf("enclave: derive %s: %w", path, err)
		}
	case kindKeyBox:
		out.channel, err = hkdf.Key(sha256.New, priv[:], nil, "agentkeys/keybox/root/v1", 32)
		if err != nil {
			return nil, fmt.Errorf("enclave: derive %s: %w", path, err)
		}
	case kindShielding:
		out.shield, err = shieldingKey(priv[:])
		if err != nil {
			return nil, fmt.Errorf("enclave: derive %s: %w", path, err)
		}
		public = out.shield.PublicKey().Bytes()
	default:
		return nil, fmt.Errorf("%w: %s", ErrUnknownPath, path)
	}
	out.info = attest.KeyInfo{
		Path:   path,
		Alg:    k.alg(),
		Kid:    attest.Kid(path, public),
		Public: hex.EncodeToString(public),
	}
	return out, nil
}

// shieldingKey expands an ed25519 node private key into the hybrid
// ML-KEM-768 + X25519 HPKE private key.
func shieldingKey(ikm []byte) (hpke.PrivateKey, error) {
	xs, err := hkdf.Key(sha256.New, ikm, nil, shieldingX25519Info, 32)
	if err != nil {
		return nil, fmt.Errorf("shielding X25519 seed: %w", err)
	}
	defer clear(xs)
	ms, err := hkdf.Key(sha256.New, ikm, nil, shieldingMLKEMInfo, mlkem.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("shielding ML-KEM seed: %w", err)
	}
	defer clear(ms)
	x, err := ecdh.X25519().NewPrivateKey(xs)
	if err != nil {
		return nil, fmt.Errorf("shielding X25519 key: %w", err)
	}
	dk, err := mlkem.NewDecapsulationKey768(ms)
	if err != nil {
		return nil, fmt.Errorf("shielding ML-KEM-768 key: %w", err)
	}
	k, err := hpke.NewHybridPrivateKey(dk, x)
	if err != nil {
		return nil, fmt.Errorf("shielding hybrid key: %w", err)
	}
	return k, nil
}

// key returns the key at path, deriving and caching it on first use. The
// caller holds e.mu for reading and must call done after its last use of the
// key (done zeroes keys that did not fit in the cache).
func (e *Enclave) key(path string, k kind) (kk *key, done func(), err error) {
	e.cacheMu.RLock()
	kk = e.cache[path]
	e.cacheMu.RUnlock()
	if kk != nil {
		return kk, noop, nil
	}
	kk, err = e.derive(path, k)
	if err != nil {
		return nil, nil, err
	}
	e.cacheMu.Lock()
	defer e.cacheMu.Unlock()
	if prev := e.cache[path]; prev != nil { // lost a race: keep one copy
		kk.zero()
		return prev, noop, nil
	}
	if len(e.cache) >= maxCached {
		return kk, kk.zero, nil
	}
	e.cache[path] = kk
	return kk, noop, nil
}

func noop() {}

// PublicKey returns the public description of the key at path, deriving it
// on first use. Any valid path works (see the package documentation).
func (e *Enclave) PublicKey(path string) (attest.KeyInfo, error) {
	k, err := parsePath(path)
	if err != nil {
		return attest.KeyInfo{}, err
	}
	if err := e.rlock(); err != nil {
		return attest.KeyInfo{}, err
	}
	defer e.mu.RUnlock()
	kk, done, err := e.key(path, k)
	if err != nil {
		return attest.KeyInfo{}, err
	}
	defer done()
	return kk.info, nil
}

// Keys returns the published key set, sorted by path: issuer/jwt/v1,
// ledger/v1, oidc/issuer/v1, shielding/v1. It keeps working after Close.
func (e *Enclave) Keys() []attest.KeyInfo {
	return append([]attest.KeyInfo(nil), e.publishedInfo...)
}
