package enclave

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentkeys/agentkeys/internal/atomicfile"
)

const (
	sealedName      = "seed.sealed"
	platformKeyName = "platform.key"
	platformKeyEnv  = "AGENTKEYS_PLATFORM_KEY"

	sealVersion     = 1
	sealInfo        = "agentkeys/seal/v1"
	sealAADLabel    = "agentkeys/seal/aad/v1"
	attestKeyInfo   = "agentkeys/platform/attest/v1"
	maxSealedSize   = 4096 // a sealed seed is ~300 bytes
	maxPlatformSize = 1024
)

// sealedFile is the JSON form of seed.sealed.
type sealedFile struct {
	V        int    `json:"v"`
	MrSigner string `json:"mrsigner"` // hex SHA-256 of the release-signing public key
	Platform string `json:"platform"` // hex SHA-256 of the platform attestation public key
	Nonce    string `json:"nonce"`    // hex, 12 bytes
	CT       string `json:"ct"`       // hex, AES-256-GCM(seed) with tag
}

// platformSource describes where the platform secret came from, for errors.
type platformSource string

// unsealOrCreate loads the platform secret, derives the attestation key and
// unseals seed.sealed, creating both on first start.
func (e *Enclave) unsealOrCreate(cfg Config) error {
	if err := ensureDir(cfg.Dir); err != nil {
		return err
	}
	sealPath := filepath.Join(cfg.Dir, sealedName)
	sealExists := false
	switch _, err := os.Lstat(sealPath); {
	case err == nil:
		sealExists = true
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("enclave: check %s: %w", sealPath, err)
	}

	secret, src, err := loadPlatformSecret(cfg, sealExists)
	if err != nil {
		return err
	}
	defer clear(secret)

	attestSeed, err := hkdf.Key(sha256.New, secret, nil, attestKeyInfo, ed25519.SeedSize)
	if err != nil {
		return fmt.Errorf("enclave: derive platform attestation key: %w", err)
	}
	e.sec.attestPriv = ed25519.NewKeyFromSeed(attestSeed)
	clear(attestSeed)
	e.platformPub = e.sec.attestPriv.Public().(ed25519.PublicKey)
	platformID := sha256.Sum256(e.platformPub)

	sealKey, err := hkdf.Key(sha256.New, secret, nil, sealInfo+string(e.meas.MrSigner[:]), 32)
	if err != nil {
		return fmt.Errorf("enclave: derive sealing key: %w", err)
	}
	defer clear(sealKey)

	if sealExists && cfg.Handoff != nil {
		return fmt.Errorf("enclave: %s already holds a seed, and a handoff never replaces one: start without --handoff-from to use it, or give the successor an empty data directory; the sealed seed was left untouched", sealPath)
	}
	if !sealExists {
		if cfg.Handoff != nil {
			if err := e.receiveSeed(cfg.Handoff); err != nil {
				return err
			}
			e.handedOff = true
		} else if _, err := rand.Read(e.sec.seed[:]); err != nil {
			return fmt.Errorf("enclave: generate master seed: %w", err)
		}
		blob, err := sealSeed(sealKey, e.meas.MrSigner, platformID, &e.sec.seed)
		if err != nil {
			return err
		}
		if err := atomicfile.CreateNew(filepath.Join(cfg.Dir, sealedName), blob, 0o600); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("enclave: %s appeared while this process was creating it: another process is initialising %s; stop it and start one server per data directory: %w", sealPath, cfg.Dir, err)
			}
			return fmt.Errorf("enclave: write %s: %w", sealPath, err)
		}
		e.created = true
	}

	// Always unseal from disk, also right after creating it: the seed in
	// use is provably the one that the next start will read.
	var onDisk [32]byte
	defer clear(onDisk[:])
	if err := unsealFile(sealPath, sealKey, e.meas.MrSigner, platformID, src, &onDisk); err != nil {
		return err
	}
	if e.created && onDisk != e.sec.seed {
		return fmt.Errorf("%w: %s does not read back as the seed just written: check the disk and file system before starting again; the file was left in place", ErrCorruptSeal, sealPath)
	}
	e.sec.seed = onDisk
	return nil
}

// ensureDir creates dir with mode 0700 if it does not exist.
func ensureDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil:
		if !fi.IsDir() {
			return fmt.Errorf("enclave: data directory %s is not a directory: point Dir at a directory", dir)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("enclave: data directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("enclave: create data directory: %w", err)
	}
	// MkdirAll is subject to the umask; the directory must be exactly 0700.
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("enclave: restrict data directory: %w", err)
	}
	return nil
}

// loadPlatformSecret returns the 32-byte platform secret and where it came
// from: PlatformKeyHex when set, else PlatformKeyFile, which it creates only
// when the seed does not exist yet. It first refuses a platform key that a copy
// of the data directory would carry along (see checkPlatformPlacement).
func loadPlatformSecret(cfg Config, sealExists bool) ([]byte, platformSource, error) {
	if err := checkPlatformPlacement(cfg); err != nil {
		return nil, "", err
	}
	if cfg.PlatformKeyHex != "" {
		secret, ok := decodeSecretHex([]byte(cfg.PlatformKeyHex))
		if !ok {
			// Never echo the value: it is the secret.
			return nil, "", fmt.Errorf("enclave: %s is not 64 hex digits (32 bytes): set it to the platform key in hex, or unset it to use the platform key file", platformKeyEnv)
		}
		return secret, platformKeyEnv, nil
	}
	path := cfg.PlatformKeyFile
	if path == "" {
		return nil, "", fmt.Errorf("%w: no platform key configured: set Config.PlatformKeyFile (outside %s) or %s", ErrPlatformKeyMissing, cfg.Dir, platformKeyEnv)
	}
	src := platformSource(path)
	fi, err := os.Stat(path)
	switch {
	case err == nil:
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, "", fmt.Errorf("%w: %s has mode %o, so other users may read or replace the key that unseals the seed: restrict it with: chmod 600 %s",
				ErrPlatformKeyExposed, path, fi.Mode().Perm(), shellQuote(path))
		}
		data, err := readSmallFile(path, maxPlatformSize)
		if err != nil {
			return nil, "", fmt.Errorf("enclave: read platform key: %w", err)
		}
		defer clear(data)
		secret, ok := decodeSecretHex(data)
		if !ok {
			return nil, "", fmt.Errorf("enclave: %s does not hold 64 hex digits (32 bytes): restore the original platform key file, or set %s", path, platformKeyEnv)
		}
		return secret, src, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, "", fmt.Errorf("enclave: read platform key: %w", err)
	case sealExists:
		hint := ""
		if legacy := filepath.Join(cfg.Dir, platformKeyName); fileExists(legacy) {
			hint = fmt.Sprintf(" (a platform key lies in the data directory: mv %s %s)", shellQuote(legacy), shellQuote(path))
		}
		return nil, "", fmt.Errorf("%w: %s exists but the platform key %s does not and %s is not set: restore the platform key from its backup (kept apart from the data directory) to %s%s, or set %s to the platform key used when the seed was created; nothing was created",
			ErrPlatformKeyMissing, filepath.Join(cfg.Dir, sealedName), path, platformKeyEnv, path, hint, platformKeyEnv)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, "", fmt.Errorf("enclave: generate platform key: %w", err)
	}
	text := make([]byte, 65)
	hex.Encode(text, secret)
	text[64] = '\n'
	err = ensureDir(filepath.Dir(path))
	if err == nil {
		err = atomicfile.CreateNew(path, text, 0o600)
	}
	clear(text)
	if err != nil {
		clear(secret)
		return nil, "", fmt.Errorf("enclave: create platform key %s: %w", path, err)
	}
	return secret, src, nil
}

// checkPlatformPlacement refuses, unless cfg.DevPlatformKeyInDir, a platform
// key file inside the data directory — the configured one, or platform.key
// left there by an earlier release — since any copy of the directory would
// then unseal the seed. The error gives the exact command that fixes it; it
// changes nothing itself, so no key can be lost on the way.
func checkPlatformPlacement(cfg Config) error {
	if cfg.DevPlatformKeyInDir {
		return nil
	}
	const why = "so any copy of the data directory (a backup, an insider) would unseal the seed"
	if cfg.PlatformKeyHex == "" && cfg.PlatformKeyFile != "" && within(cfg.Dir, cfg.PlatformKeyFile) {
		return fmt.Errorf("%w: the platform key file %s is inside the data directory %s, %s: pass --platform-key with a path outside it (default $AGENTKEYS_HOME/platform.key), or --dev for a development setup; nothing was created",
			ErrPlatformKeyInDataDir, cfg.PlatformKeyFile, cfg.Dir, why)
	}
	legacy := filepath.Join(cfg.Dir, platformKeyName)
	if _, err := os.Lstat(legacy); err != nil {
		return nil
	}
	var fix string
	switch target := cfg.PlatformKeyFile; {
	case cfg.PlatformKeyHex != "" || target == "":
		fix = "move it to a path outside the data directory, and keep it as the backup of " + platformKeyEnv
	case fileExists(target):
		fix = fmt.Sprintf("it is a second copy of %s: remove it once both hold the same key: cmp %s %s && rm %s",
			target, shellQuote(legacy), shellQuote(target), shellQuote(legacy))
	default:
		cmd := fmt.Sprintf("mv %s %s", shellQuote(legacy), shellQuote(target))
		if !fileExists(filepath.Dir(target)) {
			cmd = fmt.Sprintf("mkdir -p -m 700 %s && %s", shellQuote(filepath.Dir(target)), cmd)
		}
		fix = "move it out with: " + cmd
	}
	return fmt.Errorf("%w: the platform key %s lies inside the data directory (the layout of earlier releases), %s: %s, then back it up apart from the data directory; or pass --dev to keep it there for development; nothing was changed",
		ErrPlatformKeyInDataDir, legacy, why, fix)
}

// within reports whether path is dir or lies below it, after resolving
// symbolic links as far as the path exists.
func within(dir, path string) bool {
	d, p := resolve(dir), resolve(path)
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// resolve returns the absolute form of path with symbolic links resolved in
// its longest existing prefix.
func resolve(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return filepath.Clean(path)
	}
	rest := ""
	for p := abs; ; p = filepath.Dir(p) {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(r, rest)
		}
		if p == filepath.Dir(p) {
			return abs
		}
		rest = filepath.Join(filepath.Base(p), rest)
	}
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// shellQuote quotes s for a POSIX shell, so that a command in an error
// message can be pasted as it is.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// decodeSecretHex decodes exactly 32 bytes of hex, ignoring surrounding
// whitespace. It reports no detail, so that no secret digit reaches an error.
func decodeSecretHex(text []byte) ([]byte, bool) {
	text = bytes.TrimSpace(text)
	if len(text) != 64 {
		return nil, false
	}
	secret := make([]byte, 32)
	if _, err := hex.Decode(secret, text); err != nil {
		clear(secret)
		return nil, false
	}
	return secret, true
}

// readSmallFile reads at most limit bytes of path, failing if it is larger.
func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		clear(data)
		return nil, err
	}
	if int64(len(data)) > limit {
		clear(data)
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// sealAAD is the additional data binding the header fields to the ciphertext.
func sealAAD(v int, mrsigner, platformID []byte) []byte {
	aad := appendLP(nil, []byte(sealAADLabel))
	aad = binary.BigEndian.AppendUint32(aad, uint32(v))
	aad = appendLP(aad, mrsigner)
	return appendLP(aad, platformID)
}

// sealSeed encrypts seed into the JSON form of seed.sealed.
func sealSeed(sealKey []byte, mrsigner, platformID [32]byte, seed *[32]byte) ([]byte, error) {
	gcm, err := newGCM(sealKey)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("enclave: seal nonce: %w", err)
	}
	ct := gcm.Seal(nil, nonce, seed[:], sealAAD(sealVersion, mrsigner[:], platformID[:]))
	blob, err := json.Marshal(sealedFile{
		V:        sealVersion,
		MrSigner: hex.EncodeToString(mrsigner[:]),
		Platform: hex.EncodeToString(platformID[:]),
		Nonce:    hex.EncodeToString(nonce),
		CT:       hex.EncodeToString(ct),
	})
	if err != nil {
		return nil, fmt.Errorf("enclave: encode sealed seed: %w", err)
	}
	return append(blob, '\n'), nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("enclave: seal cipher: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("enclave: seal cipher: %w", err)
	}
	return gcm, nil
}

// unsealFile reads and decrypts seed.sealed into seed. It only reads the file.
func unsealFile(path string, sealKey []byte, mrsigner, platformID [32]byte, src platformSource, seed *[32]byte) error {
	const untouched = "the sealed seed was left untouched"
	corrupt := func(what string) error {
		return fmt.Errorf("%w: %s %s: restore seed.sealed from a backup (a new seed cannot recover the keys derived from this one); %s", ErrCorruptSeal, path, what, untouched)
	}
	blob, err := readSmallFile(path, maxSealedSize)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("enclave: read %s: %w", path, err)
		}
		return corrupt(fmt.Sprintf("cannot be read (%v)", err))
	}
	var sf sealedFile
	dec := json.NewDecoder(bytes.NewReader(blob))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sf); err != nil {
		return corrupt("is not valid sealed-seed JSON")
	}
	if sf.V != sealVersion {
		return corrupt(fmt.Sprintf("has seal version %d, this build reads version %d", sf.V, sealVersion))
	}
	theirSigner, ok := decodeHexN(sf.MrSigner, 32)
	if !ok {
		return corrupt("has a malformed mrsigner field")
	}
	theirPlatform, ok := decodeHexN(sf.Platform, 32)
	if !ok {
		return corrupt("has a malformed platform field")
	}
	if !bytes.Equal(theirSigner, mrsigner[:]) {
		return fmt.Errorf("%w: %s was sealed under mrsigner %s but this build's mrsigner is %s: run the build signed by that key, or move the seed with an attested handoff (§10.3); %s",
			ErrForeignSigner, path, short(theirSigner), short(mrsigner[:]), untouched)
	}
	if !bytes.Equal(theirPlatform, platformID[:]) {
		return fmt.Errorf("%w: %s was sealed under platform key %s but the platform key from %s is %s: restore the original platform key file from its backup or set %s to the platform key used when the seed was created; %s",
			ErrWrongPlatformKey, path, short(theirPlatform), src, short(platformID[:]), platformKeyEnv, untouched)
	}
	gcm, err := newGCM(sealKey)
	if err != nil {
		return err
	}
	nonce, ok := decodeHexN(sf.Nonce, gcm.NonceSize())
	if !ok {
		return corrupt("has a malformed nonce field")
	}
	ct, ok := decodeHexN(sf.CT, len(seed)+gcm.Overhead())
	if !ok {
		return corrupt("has a malformed ct field")
	}
	pt, err := gcm.Open(nil, nonce, ct, sealAAD(sf.V, theirSigner, theirPlatform))
	if err != nil {
		return corrupt("fails authentication (ciphertext or header was modified)")
	}
	copy(seed[:], pt)
	clear(pt)
	return nil
}

// decodeHexN decodes lowercase hex of exactly n bytes.
func decodeHexN(s string, n int) ([]byte, bool) {
	if len(s) != 2*n {
		return nil, false
	}
	b, err := hex.DecodeString(s)
	if err != nil || hex.EncodeToString(b) != s {
		return nil, false
	}
	return b, true
}

// appendLP appends a big-endian uint32 length and then data.
func appendLP(b, data []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}
