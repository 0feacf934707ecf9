// Package enclave is AgentKeys' software enclave (design §2): the only holder
// of the master seed.
//
// The enclave unseals the 32-byte master seed from Dir/seed.sealed (creating
// and sealing it on first start), derives every long-lived key from it by
// SLIP-0010 (§2.3, one path per purpose) and exposes operations only: sign,
// re-encrypt, check a ciphertext, derive-public and attest. Nothing outside
// this package ever sees private key bytes, the seed or a decrypted credential:
//
//   - no exported function, method, field or error yields key material, and an
//     *Enclave prints (with any fmt verb) only its public measurements;
//   - no private key is ever written anywhere; the only file holding secret
//     material is seed.sealed (AES-256-GCM under the platform sealing key) and
//     the platform secret itself (Config.PlatformKeyFile, standing in for the
//     CPU fuse key), which lives outside Dir (see Sealing);
//   - a credential is decrypted only inside an operation that re-encrypts it
//     (Reseal, ResealToSession) or checks it (CheckSealed); its plaintext is
//     never returned nor kept, and its buffer is zeroed before the operation
//     returns (to spare the next read the hybrid KEM, the enclave keeps an
//     AES-256-GCM sealed copy under a key of its own; see Read cache);
//   - seed.sealed is created once, atomically and without overwriting, and is
//     never modified or deleted afterwards — every failure to unseal leaves it
//     untouched and names the cause and the fix.
//
// # Paths
//
// A path is a "/"-separated string of at most 16 lowercase segments
// ([a-z0-9._:@-], at most 128 bytes each). Its first segment selects the
// curve and the operations allowed on it:
//
//	shielding/...            hybrid HPKE key (ML-KEM-768 + X25519) expanded from an ed25519 node: Reseal, ResealToSession, CheckSealed
//	ledger/..., dkim/...     ed25519: SignEd25519
//	issuer/..., oidc/...     NIST P-256: SignES256 (JWS ES256)
//	wallet/eth/<omni>/v<n>   secp256k1 account wallet: SignWallet, WalletAddress (EIP-191 / EIP-55)
//	pair/...                 symmetric root of private ledger fields: SealPrivate, OpenPrivate
//	keybox/...               symmetric root of keys the enclave generates and keeps sealed on the ledger: NewRSAKey, RSAPublic, SignRSA
//
// Anything else is ErrUnknownPath. Derived keys are cached in memory (by path)
// and zeroed by Close.
//
// # Sealing
//
// seed.sealed is a small JSON document
//
//	{"v":1,"mrsigner":hex,"platform":hex,"nonce":hex,"ct":hex}
//
// where platform is SHA-256 of the platform attestation public key and ct is
// AES-256-GCM of the seed under HKDF-SHA256(platform secret, info
// "agentkeys/seal/v1" || mrsigner), with (v, mrsigner, platform) as additional
// data. Binding the seal to mrsigner (SGX MRSIGNER policy) means a build signed
// by another key cannot unseal; it must receive the seed by attested handoff
// (§10.3).
//
// The platform secret is 32 bytes, taken from Config.PlatformKeyHex (the value
// of AGENTKEYS_PLATFORM_KEY) when set, otherwise from Config.PlatformKeyFile.
// That file holds the secret as 64 lowercase hex digits followed by a newline
// (the same text AGENTKEYS_PLATFORM_KEY takes, so the two are interchangeable;
// surrounding whitespace is ignored on read). It is created (0600, its
// directory 0700 if missing) only together with a new seed, and an existing
// one that other users may read or write is refused (ErrPlatformKeyExposed).
//
// The platform secret stands in for the CPU's sealing key, so it never lives
// in Dir: a copy of the data directory alone (a backup, an insider) must open
// nothing. Open refuses (ErrPlatformKeyInDataDir) a PlatformKeyFile inside Dir
// (symbolic links resolved) and a Dir/platform.key left by earlier releases,
// whose error gives the exact command that moves it out; nothing is moved
// automatically, so no key can be lost on the way. Config.DevPlatformKeyInDir
// lifts the refusal for development. There is no default location: the caller
// (the server: $AGENTKEYS_HOME/platform.key) chooses it.
//
// # Measurements and attestation
//
// mrenclave is SHA-256 of the executable file; mrsigner is SHA-256 of the
// release-signing ed25519 public key. Without a configured signer the build
// uses the built-in dev signer — public key
// ed25519.NewKeyFromSeed(SHA-256("agentkeys/dev-signer/v1")).Public(), whose
// private half is public knowledge, so it is for development only — and
// reports tier "dev". With a configured signer (Config.SignerPublicKey) Open
// refuses, before it touches the seed, unless <executable>.sig is that key's
// Ed25519 signature over the very digest it measured (see ReleaseSignature);
// only then tier "production". Quotes are signed by the platform attestation key,
// ed25519.NewKeyFromSeed(HKDF-SHA256(platform secret, info
// "agentkeys/platform/attest/v1")), whose public key verifiers pin (see
// VerifyQuote).
//
// # Read cache
//
// Each stored ciphertext the enclave opens leaves a sealed copy behind:
// AES-256-GCM of the plaintext under a random key drawn at Open and zeroed by
// Close, bound (as additional data) to the shielding key path, the HPKE info
// and the ciphertext's SHA-256; at most 4096 copies and 32 MiB, none older than
// 5 minutes. A copy opens only for the ciphertext and binding it was made from;
// any other is refused. A disclosure of the cache alone reveals no credential;
// reading the whole process memory (root on the host) is out of scope, as that
// reveals the shielding key itself.
//
// # Limits of zeroing
//
// Close overwrites the seed and every cached ed25519 and secp256k1 key, and the
// P-256 scalar held in the ecdsa.PrivateKey. The standard library keeps its own
// opaque copies for P-256 signing, X25519 and ML-KEM that cannot be reached
// from here; Close drops every reference to them so the garbage collector can
// reclaim them.
//
// An RSA key opened from its key box (keybox/*) lives for one operation: its
// private big integers are overwritten when the operation returns; the
// standard library's precomputed copy is dropped for the garbage collector.
//
// A decrypted credential is zeroed as soon as the operation that opened it has
// re-encrypted it. What the standard library derives on the way — the HPKE
// shared secret and AEAD key schedule inside crypto/hpke, and the AES-GCM
// state of the re-encryption and of the read cache — is unreachable from here
// and left to the garbage collector; none of it is kept by the enclave.
package enclave
