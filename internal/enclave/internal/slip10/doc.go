// Package slip10 implements SLIP-0010 hierarchical deterministic key
// derivation for the ed25519, nist256p1 (NIST P-256) and secp256k1 curves,
// together with AgentKeys' mapping from "/"-separated string paths such as
// "oidc/issuer/v1" to hardened child indexes.
//
// Every key AgentKeys uses is derived from a single 32-byte enclave seed:
//
//	node, err := slip10.DeriveString(slip10.NIST256p1, seed, "oidc/issuer/v1")
//
// The package hands out raw private key material (see [Node.PrivateKey]).
// It therefore lives under an internal directory so that only the enclave
// package can import it; no other package may derive or hold these keys.
// Callers should call [Node.Zero] on every node once they are done with it.
package slip10
