// Package token mints and verifies AgentKeys session tokens (§4.2): ES256 JWTs signed inside the enclave by issuer/jwt/vN. It checks signatures and claims; revocation and scope are the caller's (they live in ledger state).
//
// A session token is a JWS in compact serialization whose protected header
// is exactly {"alg":"ES256","kid":<kid>,"typ":"JWT"} and whose payload is a
// [Claims] object. Tokens are signed by the enclave through
// [Signer.SignES256]; the private key never leaves it.
//
// What this package must never do:
//
//   - accept any algorithm but ES256 (no "none", no HMAC keyed with a public
//     key), any header parameter besides alg, kid and typ (no embedded jwk,
//     jku, x5c, crit, b64), or a kid outside the accepted set fixed at
//     [NewIssuer] — the kid selects the verification key, the token never
//     supplies one;
//   - sign with, or accept signatures of, a key outside issuer/jwt/*, so
//     that the OIDC keys (oidc/issuer/*) that sign tokens for clouds can
//     never produce a session token;
//   - put token text in an error (errors carry fixed descriptions, never the
//     input or a decoder message quoting it);
//   - decide on revocation or scope: [Issuer.Verify] says only that the
//     token is authentic and its claims are well-formed and current.
//
// [Issuer.Verify] caches successful signature verifications by SHA-256 of
// the exact token bytes, so repeated verification of the same token costs a
// hash and a map lookup; the time-dependent claims (exp, iat) are re-checked
// on every call.
package token
