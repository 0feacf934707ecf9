package slip10

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Hardened is the first hardened child index (2^31).
const Hardened uint32 = 0x80000000

// Path limits enforced by [ParsePath].
const (
	MaxPathSegments   = 16
	MaxSegmentLen     = 128
	indexDomainPrefix = "agentkeys/hdkd/v1|"
	pathExample       = `want "/"-separated segments of [A-Za-z0-9._:@-], e.g. "oidc/issuer/v1"`
)

// ErrInvalidPath is returned by [ParsePath] and [DeriveString] for a
// malformed string path.
var ErrInvalidPath = errors.New("invalid derivation path")

// Index maps one path segment to a hardened child index:
//
//	0x80000000 | (uint32_be(SHA-256("agentkeys/hdkd/v1|" + segment)[0:4]) & 0x7fffffff)
//
// Index does not validate segment; use [ParsePath] for untrusted input.
func Index(segment string) uint32 {
	h := sha256.Sum256([]byte(indexDomainPrefix + segment))
	return Hardened | (binary.BigEndian.Uint32(h[:4]) &^ Hardened)
}

// ParsePath splits a "/"-separated AgentKeys path such as "oidc/issuer/v1",
// "wallet/eth/<64 hex>/v1" or "dkim/mail.example.com/v1" into hardened
// indexes, one [Index] per segment.
//
// A valid path has 1 to 16 non-empty segments of at most 128 bytes each,
// drawn from [A-Za-z0-9._:@-], with no leading or trailing "/". BIP-32 style
// paths ("m/0'/1") are rejected: the first segment may not be "m" or "M".
// Errors wrap [ErrInvalidPath].
func ParsePath(path string) ([]uint32, error) {
	if err := checkPathShape(path); err != nil {
		return nil, fmt.Errorf("slip10: parse path %q: %w: %w", path, ErrInvalidPath, err)
	}
	segments := strings.Split(path, "/")
	indexes := make([]uint32, len(segments))
	for i, seg := range segments {
		if err := checkSegment(seg); err != nil {
			return nil, fmt.Errorf("slip10: parse path %q: %w: segment %d: %w",
				path, ErrInvalidPath, i+1, err)
		}
		indexes[i] = Index(seg)
	}
	return indexes, nil
}

// checkPathShape validates the parts of a path that do not depend on the
// individual segments.
func checkPathShape(path string) error {
	const maxLen = MaxPathSegments*MaxSegmentLen + MaxPathSegments - 1
	switch {
	case path == "":
		return errors.New("path is empty; " + pathExample)
	case len(path) > maxLen:
		return fmt.Errorf("path is %d bytes, longer than the %d-byte maximum; %s",
			len(path), maxLen, pathExample)
	case strings.HasPrefix(path, "/"):
		return errors.New(`path starts with "/"; ` + pathExample)
	case strings.HasSuffix(path, "/"):
		return errors.New(`path ends with "/"; ` + pathExample)
	}
	if first, _, _ := strings.Cut(path, "/"); first == "m" || first == "M" {
		return errors.New(`BIP-32 style "m/" prefix is not allowed; ` + pathExample)
	}
	if n := strings.Count(path, "/") + 1; n > MaxPathSegments {
		return fmt.Errorf("path has %d segments, more than the maximum of %d; %s",
			n, MaxPathSegments, pathExample)
	}
	return nil
}

// checkSegment validates one path segment.
func checkSegment(seg string) error {
	if seg == "" {
		return errors.New(`segment is empty ("//"); ` + pathExample)
	}
	if len(seg) > MaxSegmentLen {
		return fmt.Errorf("segment is %d bytes, longer than the %d-byte maximum; %s",
			len(seg), MaxSegmentLen, pathExample)
	}
	for i := 0; i < len(seg); i++ {
		if !segmentByte(seg[i]) {
			return fmt.Errorf("byte %d (%q) is not allowed; %s", i, seg[i:i+1], pathExample)
		}
	}
	return nil
}

// segmentByte reports whether b is in [A-Za-z0-9._:@-].
func segmentByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	case b == '.', b == '_', b == ':', b == '@', b == '-':
		return true
	}
	return false
}

// DeriveString derives the node for the string path on curve c from seed:
// [NewMaster], then [ParsePath], then [Node.DerivePath]. The master node is
// zeroed before returning.
func DeriveString(c Curve, seed []byte, path string) (*Node, error) {
	indexes, err := ParsePath(path)
	if err != nil {
		return nil, err
	}
	master, err := NewMaster(c, seed)
	if err != nil {
		return nil, err
	}
	defer master.Zero()
	node, err := master.DerivePath(indexes)
	if err != nil {
		return nil, fmt.Errorf("slip10: derive %s path %q: %w", c, path, err)
	}
	return node, nil
}
