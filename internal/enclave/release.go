package enclave

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Release signatures (§2.2). A build runs at tier production only when its
// executable carries a detached signature by the configured release-signing key:
// the file <executable>.sig, a JSON document
//
//	{"v":1,"sha256":hex,"signer":hex,"sig":hex}
//
// where sha256 is the digest of the executable (its mrenclave), signer the
// ed25519 public key and sig ed25519 over "agentkeys/release/v1\n" || the 32
// digest bytes. Unknown fields, another version and documents over
// MaxReleaseSigSize bytes are refused.
const (
	ReleaseSigVersion = 1
	ReleaseSigSuffix  = ".sig"
	MaxReleaseSigSize = 4096
	releaseDomain     = "agentkeys/release/v1\n"
)

// ErrReleaseSignature: the executable's release signature is missing or does
// not verify under the configured release-signing key. Open returns it wrapped
// in a *ReleaseError.
var ErrReleaseSignature = errors.New("enclave: release signature")

// ReleaseSignature is the content of an <executable>.sig file.
type ReleaseSignature struct {
	Version int    `json:"v"`
	SHA256  string `json:"sha256"` // hex digest of the executable
	Signer  string `json:"signer"` // hex ed25519 public key
	Sig     string `json:"sig"`    // hex ed25519 signature
}

// ReleaseError says why a build may not run at tier production: which
// executable, which signature file, and what is wrong with it.
type ReleaseError struct {
	Executable, SigFile string
	Reason              string
}

func (e *ReleaseError) Error() string {
	return fmt.Sprintf("enclave: release signature %s of %s: %s", e.SigFile, e.Executable, e.Reason)
}

func (e *ReleaseError) Unwrap() error { return ErrReleaseSignature }

func releaseMessage(digest [32]byte) []byte {
	return append([]byte(releaseDomain), digest[:]...)
}

// SignRelease signs an executable's digest with a release-signing key.
func SignRelease(key ed25519.PrivateKey, digest [32]byte) ReleaseSignature {
	return ReleaseSignature{
		Version: ReleaseSigVersion,
		SHA256:  hex.EncodeToString(digest[:]),
		Signer:  hex.EncodeToString(key.Public().(ed25519.PublicKey)),
		Sig:     hex.EncodeToString(ed25519.Sign(key, releaseMessage(digest))),
	}
}

// ParseReleaseSignature decodes a signature file strictly.
func ParseReleaseSignature(b []byte) (ReleaseSignature, error) {
	var s ReleaseSignature
	if len(b) > MaxReleaseSigSize {
		return s, fmt.Errorf("it is %d bytes, more than a signature file's %d", len(b), MaxReleaseSigSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("it is not a release signature document: %v", err)
	}
	if dec.More() {
		return s, errors.New("it has data after the signature document")
	}
	if s.Version != ReleaseSigVersion {
		return s, fmt.Errorf("it has version %d; this build reads version %d", s.Version, ReleaseSigVersion)
	}
	return s, nil
}

// VerifyRelease checks that sig is signer's signature over digest.
func VerifyRelease(sig ReleaseSignature, digest [32]byte, signer ed25519.PublicKey) error {
	if d, ok := decodeHexN(sig.SHA256, 32); !ok || !bytes.Equal(d, digest[:]) {
		return fmt.Errorf("it signs sha256 %.16s…, but this executable's sha256 is %s…: it was made for another build, or the executable was altered",
			sig.SHA256, hex.EncodeToString(digest[:8]))
	}
	if k, ok := decodeHexN(sig.Signer, ed25519.PublicKeySize); !ok || !ed25519.PublicKey(k).Equal(signer) {
		return fmt.Errorf("it names signer %.16s…, not the configured release-signing key %s…", sig.Signer, hex.EncodeToString(signer[:8]))
	}
	s, ok := decodeHexN(sig.Sig, ed25519.SignatureSize)
	if !ok || !ed25519.Verify(signer, releaseMessage(digest), s) {
		return errors.New("its signature does not verify under the release-signing key")
	}
	return nil
}

// verifyReleaseFile reads exe+".sig" and verifies it against digest and signer.
func verifyReleaseFile(exe string, digest [32]byte, signer ed25519.PublicKey) error {
	sigFile := exe + ReleaseSigSuffix
	fail := func(format string, args ...any) error {
		return &ReleaseError{Executable: exe, SigFile: sigFile, Reason: fmt.Sprintf(format, args...)}
	}
	f, err := os.Open(sigFile)
	if errors.Is(err, fs.ErrNotExist) {
		return fail("there is no signature file")
	} else if err != nil {
		return fail("cannot read it: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxReleaseSigSize+1))
	if err != nil {
		return fail("cannot read it: %v", err)
	}
	sig, err := ParseReleaseSignature(b)
	if err != nil {
		return fail("%v", err)
	}
	if err := VerifyRelease(sig, digest, signer); err != nil {
		return fail("%v", err)
	}
	return nil
}

// HashFile returns SHA-256 of the named file.
func HashFile(path string) ([32]byte, error) {
	var out [32]byte
	f, err := os.Open(path)
	if err != nil {
		return out, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return out, err
	}
	h.Sum(out[:0])
	return out, nil
}
