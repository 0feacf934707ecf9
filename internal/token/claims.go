package token

import (
	"encoding/base64"
	"fmt"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

const (
	// maxClockSkew is how far (in seconds) iat may lie ahead of the
	// verifier's clock.
	maxClockSkew = 60
	// maxIDLen bounds sid and jti.
	maxIDLen = 256
	// jktLen is the length of an unpadded base64url SHA-256 thumbprint.
	jktLen = 43
)

// invalid returns an error wrapping ErrInvalid with a fixed description.
// Callers pass constant text only, never token or claim contents.
func invalid(what string) error {
	return fmt.Errorf("%w: %s", ErrInvalid, what)
}

// checkStatic checks every claim that does not depend on the clock: the
// fixed claims, the identifiers and the role rules.
func checkStatic(c *Claims, iss string) error {
	switch {
	case c.Issuer != iss:
		return invalid("wrong iss")
	case c.Audience != Audience:
		return invalid(`aud is not "agentkeys"`)
	case c.Type != TypeAccess:
		return invalid(`typ is not "ACCESS"`)
	case !ledger.ValidOmni(c.Subject):
		return invalid("sub is not an omni (64 lowercase hex digits)")
	case !validID(c.SessionID):
		return invalid("sid is missing or longer than 256 bytes")
	case !validID(c.ID):
		return invalid("jti is missing or longer than 256 bytes")
	case c.IssuedAt <= 0:
		return invalid("iat is missing")
	case c.Expiry <= c.IssuedAt:
		return invalid("exp is not after iat")
	}
	return checkRole(c)
}

// checkRole checks role and the claims that depend on it: an agent token
// names its owner in parent and carries a proof-key binding; an owner token
// has no parent and may carry a binding.
func checkRole(c *Claims) error {
	switch c.Role {
	case RoleOwner:
		if c.Parent != "" {
			return invalid("owner token with a parent")
		}
		if c.Cnf != nil && !validJKT(c.Cnf.JKT) {
			return invalid("cnf.jkt is not a base64url SHA-256 thumbprint")
		}
	case RoleAgent:
		if !ledger.ValidOmni(c.Parent) || c.Parent == c.Subject {
			return invalid("agent token without a valid parent")
		}
		if c.Cnf == nil || !validJKT(c.Cnf.JKT) {
			return invalid("agent token without a valid cnf.jkt")
		}
	default:
		return invalid(`role is not "owner" or "agent"`)
	}
	return nil
}

// checkTime checks the clock-dependent claims against now (Unix seconds):
// exp must be after now, iat at most maxClockSkew ahead of it.
func checkTime(c *Claims, now int64) error {
	if c.Expiry <= now {
		return fmt.Errorf("%w (exp %d, now %d)", ErrExpired, c.Expiry, now)
	}
	if c.IssuedAt > now+maxClockSkew {
		return invalid("iat is in the future")
	}
	return nil
}

// validID reports whether s is a usable sid or jti: non-empty, bounded.
func validID(s string) bool {
	return s != "" && len(s) <= maxIDLen
}

// validJKT reports whether s is an RFC 7638 SHA-256 thumbprint: 43
// characters of canonical unpadded base64url encoding 32 bytes.
func validJKT(s string) bool {
	if len(s) != jktLen {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == 32 && isB64URL(s)
}
