package enclave

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentkeys/agentkeys/internal/attest"
)

// Sentinel errors. Errors returned by this package wrap them with %w and carry
// a one-line message naming the cause and the fix; test with errors.Is.
var (
	// ErrWrongPlatformKey: seed.sealed was sealed under another platform
	// secret.
	ErrWrongPlatformKey = errors.New("enclave: wrong platform key")
	// ErrForeignSigner: seed.sealed was sealed by a build with another mrsigner.
	ErrForeignSigner = errors.New("enclave: seed sealed by another signer")
	// ErrCorruptSeal: seed.sealed is not a valid sealed seed (bad JSON,
	// unknown version, or authentication failure).
	ErrCorruptSeal = errors.New("enclave: corrupt sealed seed")
	// ErrPlatformKeyMissing: seed.sealed exists but no platform secret was
	// configured or found.
	ErrPlatformKeyMissing = errors.New("enclave: platform key missing")
	// ErrPlatformKeyInDataDir: a platform key file lies inside the data
	// directory, where any copy of it would unseal the seed (allowed only
	// with Config.DevPlatformKeyInDir).
	ErrPlatformKeyInDataDir = errors.New("enclave: platform key inside the data directory")
	// ErrPlatformKeyExposed: the platform key file is readable or writable by
	// users other than its owner.
	ErrPlatformKeyExposed = errors.New("enclave: platform key file open to other users")
	// ErrUnknownPath: the path is malformed, names no key purpose, or names a
	// key the requested operation cannot use.
	ErrUnknownPath = errors.New("enclave: unknown key path")
	// ErrClosed: the enclave was closed.
	ErrClosed = errors.New("enclave: closed")
)

// Config configures Open.
type Config struct {
	Dir string // the data directory: holds seed.sealed
	// PlatformKeyFile holds the platform secret (64 hex digits and a
	// newline). It must lie outside Dir: a copy of the data directory alone
	// must open nothing. It is created (0600, in a 0700 directory if that is
	// missing) only together with a new seed. Not read when PlatformKeyHex is set.
	PlatformKeyFile string
	PlatformKeyHex  string // value of AGENTKEYS_PLATFORM_KEY (64 hex chars); when set, the platform secret
	// DevPlatformKeyInDir accepts a platform key file inside Dir (the layout
	// of earlier releases). Development only: a copy of Dir then unseals.
	DevPlatformKeyInDir bool
	// SignerPublicKey is the release-signing ed25519 public key (32 bytes);
	// nil = the built-in dev signer, tier dev. When set, Open refuses
	// (*ReleaseError) unless <executable>.sig is this key's signature over the
	// executable's digest; then tier production.
	SignerPublicKey []byte
	Executable      string // file hashed for mrenclave; "" = os.Executable()
	// Handoff, when set, is how a successor (§10.3) receives the seed when
	// Dir holds none: Open makes an ephemeral HPKE key, quotes it
	// (attest.HandoffReportData) and passes quote and public key to Handoff,
	// which returns the seed sealed to that key by the running enclave
	// (SealSeedTo). Open then seals the seed under this build's mrsigner like
	// a new one. Tier production only.
	Handoff func(q attest.Quote, hpkePub []byte) ([]byte, error)
	// Now dates quotes and ages the read cache; nil = time.Now. The broker
	// passes its own clock.
	Now func() time.Time
}

// Measurements are the enclave's identity as reported in quotes (§2.2).
type Measurements struct {
	MrEnclave, MrSigner [32]byte
	Tier                attest.Tier
}

// Enclave is an open software enclave. It is safe for concurrent use. It never
// prints key material: every fmt verb renders String.
type Enclave struct {
	meas      Measurements
	created   bool
	handedOff bool // the seed came from a predecessor (Config.Handoff)

	platformPub   ed25519.PublicKey // platform attestation public key
	publishedInfo []attest.KeyInfo  // Keys, sorted by path

	// mu guards the contents of sec: operations hold it for reading for
	// their whole duration, Close takes it for writing. closed is set under
	// mu and may be read without it (String does, so that formatting never
	// waits on a lock).
	mu     sync.RWMutex
	closed atomic.Bool
	sec    *secrets // behind a pointer so that even fmt on a copied value prints an address

	cacheMu sync.RWMutex
	cache   map[string]*key

	reads *readCache // sealed copies of opened credentials (readcache.go)
	now   func() time.Time
}

// secrets is everything the enclave must never reveal.
type secrets struct {
	seed       [32]byte
	attestPriv ed25519.PrivateKey
}

// devSignerSeedLabel derives the built-in dev signer. Its private key is
// public knowledge: a build running under it reports tier "dev".
const devSignerSeedLabel = "agentkeys/dev-signer/v1"

// devSignerPublicKey is the built-in dev release-signing public key:
// ed25519.NewKeyFromSeed(SHA-256("agentkeys/dev-signer/v1")).Public().
var devSignerPublicKey = func() ed25519.PublicKey {
	s := sha256.Sum256([]byte(devSignerSeedLabel))
	return ed25519.NewKeyFromSeed(s[:]).Public().(ed25519.PublicKey)
}()

// publishedPaths is the key set served by Keys (and committed to by Attest).
var publishedPaths = []string{"issuer/jwt/v1", "ledger/v1", "oidc/issuer/v1", "shielding/v1"}

// Open opens the enclave whose sealed seed lives in cfg.Dir, creating and
// sealing a fresh seed (and, when needed, the platform key file) on first
// start. It never overwrites or deletes an existing seed.sealed, and refuses a
// platform key inside cfg.Dir unless cfg.DevPlatformKeyInDir.
func Open(cfg Config) (*Enclave, error) {
	if cfg.Dir == "" {
		return nil, errors.New("enclave: Config.Dir is empty: set the data directory that holds seed.sealed")
	}
	signer := devSignerPublicKey
	tier := attest.TierDev
	if cfg.SignerPublicKey != nil {
		if len(cfg.SignerPublicKey) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("enclave: release-signing public key is %d bytes, want %d: configure the build's ed25519 signer public key, or none for the dev signer", len(cfg.SignerPublicKey), ed25519.PublicKeySize)
		}
		if ed25519.PublicKey(cfg.SignerPublicKey).Equal(devSignerPublicKey) {
			return nil, errors.New("enclave: the configured release-signing key is the built-in dev signer: leave it unset for a dev build, or configure the real release key for production")
		}
		signer = cfg.SignerPublicKey
		tier = attest.TierProduction
	}
	exe, mrenclave, err := hashExecutable(cfg.Executable)
	if err != nil {
		return nil, err
	}
	if tier == attest.TierProduction {
		// The digest just measured is the one verified: no second read.
		if err := verifyReleaseFile(exe, mrenclave, signer); err != nil {
			return nil, err
		}
	}
	e := &Enclave{
		meas: Measurements{
			MrEnclave: mrenclave,
			MrSigner:  sha256.Sum256(signer),
			Tier:      tier,
		},
		sec:   &secrets{},
		cache: make(map[string]*key),
		reads: newReadCache(),
		now:   cfg.Now,
	}
	if e.now == nil {
		e.now = time.Now
	}
	if err := e.unsealOrCreate(cfg); err != nil {
		e.Close()
		return nil, err
	}
	// Derive the published set now: it proves the seed works, and the first
	// request does not pay for derivation.
	for _, p := range publishedPaths {
		info, err := e.PublicKey(p)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("enclave: derive published key %s: %w", p, err)
		}
		e.publishedInfo = append(e.publishedInfo, info)
	}
	return e, nil
}

// hashExecutable returns the executable's resolved path and SHA-256: of the
// named file, or of the running executable when path is "" (on Linux the
// image the process runs, /proc/self/exe, even if the file at its path was
// replaced since).
func hashExecutable(path string) (string, [32]byte, error) {
	running := path == ""
	if running {
		p, err := os.Executable()
		if err != nil {
			return "", [32]byte{}, fmt.Errorf("enclave: locate the running executable for mrenclave: %w (set Config.Executable)", err)
		}
		path = p
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", [32]byte{}, fmt.Errorf("enclave: measure executable for mrenclave: %w", err)
	}
	measured := resolved
	if running && runtime.GOOS == "linux" {
		measured = "/proc/self/exe"
	}
	sum, err := HashFile(measured)
	if err != nil {
		return "", [32]byte{}, fmt.Errorf("enclave: measure executable %s for mrenclave: %w", resolved, err)
	}
	return resolved, sum, nil
}

// Created reports whether this Open created a new seed (HandedOff tells
// whether it came from a predecessor).
func (e *Enclave) Created() bool { return e.created }

// HandedOff reports whether this Open received the seed by handoff.
func (e *Enclave) HandedOff() bool { return e.handedOff }

// Measurements returns the enclave's mrenclave, mrsigner and tier.
func (e *Enclave) Measurements() Measurements { return e.meas }

// PlatformPublicKey returns the platform attestation public key that signs
// this enclave's quotes.
func (e *Enclave) PlatformPublicKey() ed25519.PublicKey {
	return append(ed25519.PublicKey(nil), e.platformPub...)
}

// Close zeroes the seed, the attestation key, every cached private key and
// the read cache key, and drops the read cache. Later operations fail with
// ErrClosed. Close is idempotent and waits for operations in progress.
func (e *Enclave) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed.Load() {
		return
	}
	e.closed.Store(true)
	clear(e.sec.seed[:])
	clear(e.sec.attestPriv)
	e.sec.attestPriv = nil
	e.cacheMu.Lock()
	for p, k := range e.cache {
		k.zero()
		delete(e.cache, p)
	}
	e.cacheMu.Unlock()
	e.reads.close()
}

// String describes the enclave by its public measurements only.
func (e *Enclave) String() string {
	if e == nil {
		return "enclave(nil)"
	}
	state := "open"
	if e.closed.Load() {
		state = "closed"
	}
	return fmt.Sprintf("enclave(tier=%s mrenclave=%s mrsigner=%s %s)",
		e.meas.Tier, short(e.meas.MrEnclave[:]), short(e.meas.MrSigner[:]), state)
}

// GoString is String: %#v must not dump the struct.
func (e *Enclave) GoString() string { return e.String() }

// Format renders String for every verb (%d, %x, … included), so no fmt verb
// can reach the fields.
func (e *Enclave) Format(f fmt.State, verb rune) {
	io.WriteString(f, e.String())
}

// short renders the first 4 bytes of b as hex followed by an ellipsis.
func short(b []byte) string {
	if len(b) > 4 {
		return hex.EncodeToString(b[:4]) + "…"
	}
	return hex.EncodeToString(b)
}

// rlock takes the operation lock and fails if the enclave is closed. The
// caller must call e.mu.RUnlock when err is nil.
func (e *Enclave) rlock() error {
	e.mu.RLock()
	if e.closed.Load() {
		e.mu.RUnlock()
		return ErrClosed
	}
	return nil
}
