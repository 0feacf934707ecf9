package mail

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// MessageKey is the object-store key of one stored message (§9): the inbox's
// Prefix, then the time the edge accepted it as unix nanoseconds, zero-padded
// to 19 digits, a '-', the first 8 hex digits of the SHA-256 of the object's
// bytes (the message as stored, the edge's Authentication-Results first) and
// ".eml":
//
//	<wallet>/<address>/1796083200123456789-0a1b2c3d.eml
//
// Keys of one inbox sort by arrival (a List is oldest first); the hash lets a
// reader check the object it got. Nothing else is encoded: no subject, no
// sender, nothing parsed from the message.
func MessageKey(prefix string, unixNanos int64, object []byte) string {
	sum := sha256.Sum256(object)
	return fmt.Sprintf("%s%019d-%s.eml", prefix, unixNanos, hex.EncodeToString(sum[:4]))
}

// ParseMessageKey splits a key MessageKey made into its inbox prefix, arrival
// time (unix nanos) and hash (8 hex digits); ok is false for any other key.
func ParseMessageKey(key string) (prefix string, unixNanos int64, hash8 string, ok bool) {
	i := strings.LastIndexByte(key, '/')
	name := key[i+1:]
	// 19 digits, '-', 8 hex, ".eml"
	if len(name) != 19+1+8+4 || name[19] != '-' || !strings.HasSuffix(name, ".eml") {
		return "", 0, "", false
	}
	for _, c := range name[:19] {
		if c < '0' || c > '9' {
			return "", 0, "", false
		}
	}
	n, err := strconv.ParseInt(name[:19], 10, 64)
	hash8 = name[20:28]
	if _, herr := hex.DecodeString(hash8); err != nil || herr != nil || strings.ToLower(hash8) != hash8 {
		return "", 0, "", false
	}
	return key[:i+1], n, hash8, true
}
