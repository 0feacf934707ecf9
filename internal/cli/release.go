package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/atomicfile"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// releaseKeyFix is the fix for an unreadable release-signing key file.
const releaseKeyFix = "pass the file agentkeys release keygen --out FILE wrote"

func releaseCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Make and sign release builds (tier production)",
		Long: `A broker started with --mrsigner-key HEX runs at tier production only when its
executable carries a detached signature by that key: the file <executable>.sig.
Make the key once with release keygen (keep the file offline), sign each build
with release sign, and ship the .sig beside the executable.`,
		Example: "  agentkeys release keygen --out release.key\n" +
			"  agentkeys release sign --key release.key --binary ./agentkeys\n" +
			"  agentkeys release verify --mrsigner-key HEX --binary ./agentkeys",
	}
	cmd.AddCommand(releaseKeygenCmd(e), releaseSignCmd(e), releaseVerifyCmd(e))
	return cmd
}

// ReleaseKeyInfo is the --json output of release keygen.
type ReleaseKeyInfo struct {
	KeyFile   string `json:"key_file"`
	PublicKey string `json:"public_key"` // hex; the server's --mrsigner-key
	MrSigner  string `json:"mrsigner"`   // hex SHA-256 of the public key, as quotes and tokens show it
}

func releaseKeygenCmd(e *env) *cobra.Command {
	var out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Make a release-signing key; print its public key for --mrsigner-key",
		Long: `Writes a new Ed25519 release-signing key to --out (PKCS#8 PEM, mode 0600; an
existing file is never replaced) and prints its public key in hex: the value of
agentkeys server --mrsigner-key. The private key is never printed. Keep the file
offline: whoever holds it can sign builds that run as your production broker.`,
		Example: "  agentkeys release keygen --out /secure/release.key\n  agentkeys release keygen --out release.key --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return problem.New(problem.BadRequest, "--out is required", "pass the file to write the key to, e.g. --out release.key")
			}
			pub, err := writeReleaseKey(out)
			if err != nil {
				return err
			}
			info := ReleaseKeyInfo{KeyFile: out, PublicKey: hex.EncodeToString(pub), MrSigner: mrsignerOf(pub)}
			if asJSON {
				return e.printJSON(info)
			}
			fmt.Fprintln(e.stdout, info.PublicKey)
			fmt.Fprintf(e.stderr, "Wrote the release-signing key to %s (0600); keep it offline.\n"+
				"Start the broker with --mrsigner-key %s (mrsigner %s).\n", out, info.PublicKey, info.MrSigner)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the new key to (0600; must not exist)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print key_file, public_key and mrsigner as JSON")
	return cmd
}

// ReleaseSigned is the --json output of release sign and release verify.
type ReleaseSigned struct {
	Binary        string `json:"binary"`
	SHA256        string `json:"sha256"` // the build's mrenclave
	Signer        string `json:"signer"` // hex public key
	MrSigner      string `json:"mrsigner"`
	SignatureFile string `json:"signature_file"`
}

func releaseSignCmd(e *env) *cobra.Command {
	var keyFile, binary string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sign",
		Short: "Sign an executable: write BINARY.sig",
		Long: `Signs the SHA-256 digest of --binary with the release-signing key and writes
the detached signature to BINARY.sig (replacing an older one). Ship it beside the
executable: agentkeys server --mrsigner-key HEX checks it at every start. Sign
the exact file you ship; any change to it, even one byte, needs a new signature.`,
		Example: "  agentkeys release sign --key /secure/release.key --binary ./agentkeys\n" +
			"  agentkeys release sign --key release.key --binary dist/agentkeys --json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := loadReleaseKey(keyFile)
			if err != nil {
				return err
			}
			digest, err := hashBinary(binary)
			if err != nil {
				return err
			}
			sig := enclave.SignRelease(key, digest)
			b, _ := json.Marshal(sig)
			sigFile := binary + enclave.ReleaseSigSuffix
			if err := atomicfile.WriteFile(sigFile, append(b, '\n'), 0o644); err != nil {
				return problem.Newf(problem.BadRequest, "make the binary's directory writable, or sign a copy elsewhere",
					"cannot write %s: %v", sigFile, err)
			}
			pub := key.Public().(ed25519.PublicKey)
			res := ReleaseSigned{Binary: binary, SHA256: sig.SHA256, Signer: sig.Signer, MrSigner: mrsignerOf(pub), SignatureFile: sigFile}
			if asJSON {
				return e.printJSON(res)
			}
			fmt.Fprintf(e.stdout, "Signed %s (sha256 %s) with release key %s; wrote %s.\n", binary, res.SHA256, res.Signer, sigFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "the release-signing key file (release keygen --out)")
	cmd.Flags().StringVar(&binary, "binary", "", "the executable to sign")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print binary, sha256, signer, mrsigner and signature_file as JSON")
	cmd.MarkFlagRequired("key")
	cmd.MarkFlagRequired("binary")
	return cmd
}

func releaseVerifyCmd(e *env) *cobra.Command {
	var signer, binary string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check BINARY.sig as the server will at start",
		Long: `Checks that BINARY.sig is the --mrsigner-key's signature over the digest of
--binary, exactly as agentkeys server --mrsigner-key does when it starts. Exit 0
when it verifies, 3 when it does not.`,
		Example: "  agentkeys release verify --mrsigner-key 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29 --binary ./agentkeys",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := parseSignerKey(signer)
			if err != nil {
				return err
			}
			digest, err := hashBinary(binary)
			if err != nil {
				return err
			}
			sigFile := binary + enclave.ReleaseSigSuffix
			b, err := os.ReadFile(sigFile)
			if err == nil {
				var sig enclave.ReleaseSignature
				if sig, err = enclave.ParseReleaseSignature(b); err == nil {
					err = enclave.VerifyRelease(sig, digest, pub)
				}
			}
			if err != nil {
				return problem.Newf(problem.Denied, "sign this exact file: agentkeys release sign --key KEY --binary "+binary,
					"%s does not verify for %s: %v", sigFile, binary, err)
			}
			res := ReleaseSigned{Binary: binary, SHA256: hex.EncodeToString(digest[:]), Signer: signer, MrSigner: mrsignerOf(pub), SignatureFile: sigFile}
			if asJSON {
				return e.printJSON(res)
			}
			fmt.Fprintf(e.stdout, "%s verifies: %s (sha256 %s) is signed by %s (mrsigner %s).\n", sigFile, binary, res.SHA256, signer, res.MrSigner)
			return nil
		},
	}
	cmd.Flags().StringVar(&signer, "mrsigner-key", "", "the release-signing public key (hex), as passed to the server")
	cmd.Flags().StringVar(&binary, "binary", "", "the executable to check")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print binary, sha256, signer, mrsigner and signature_file as JSON")
	cmd.MarkFlagRequired("mrsigner-key")
	cmd.MarkFlagRequired("binary")
	return cmd
}

// parseSignerKey parses a --mrsigner-key value: 64 hex characters.
func parseSignerKey(s string) (ed25519.PublicKey, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, problem.New(problem.BadRequest, "--mrsigner-key must be a 64-hex-character ed25519 public key",
			"pass the public key agentkeys release keygen printed, or omit it for the dev signer")
	}
	return b, nil
}

func mrsignerOf(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:])
}

func hashBinary(path string) ([32]byte, error) {
	d, err := enclave.HashFile(path)
	if err != nil {
		return d, problem.Wrap(err, problem.BadRequest, "pass the path of the agentkeys executable", "cannot read --binary %s: %v", path, err)
	}
	return d, nil
}

// writeReleaseKey creates a release-signing key file (PKCS#8 PEM, 0600, never
// replacing a file) and returns its public key.
func writeReleaseKey(path string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	defer clear(key)
	err = atomicfile.CreateNew(path, key, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, problem.Newf(problem.Conflict, "choose another --out, or move the existing key away if you mean to replace it",
			"%s exists; a key file is never replaced", path)
	} else if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, "choose a writable --out path", "cannot create %s: %v", path, err)
	}
	return pub, nil
}

// loadReleaseKey reads a release-signing key file, refusing one other users can
// read or write.
func loadReleaseKey(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, releaseKeyFix, "cannot read the release-signing key %s: %v", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, problem.Newf(problem.Denied, "chmod 600 "+path+", and consider the key exposed if others could read it",
			"the release-signing key %s is open to other users (mode %#o)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, releaseKeyFix, "cannot read the release-signing key %s: %v", path, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, problem.Newf(problem.BadRequest, releaseKeyFix, "%s is not a PEM PRIVATE KEY file", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	priv, ok := k.(ed25519.PrivateKey)
	if err != nil || !ok {
		return nil, problem.Newf(problem.BadRequest, releaseKeyFix, "%s does not hold an Ed25519 private key", path)
	}
	return priv, nil
}
