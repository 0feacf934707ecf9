// Package blobstore is the object-store seam of agent email (§9): raw messages
// are written once under a key and never changed, read back whole, listed by
// prefix and deleted. One interface, Store; its drivers (localstore: a
// directory; s3store: any S3 endpoint) all pass the one conformance suite in
// blobstoretest.
//
// It is a leaf: standard library only. It never parses what it stores and
// never logs an object's bytes.
package blobstore

import (
	"context"
	"errors"
	"fmt"
)

// Store holds immutable objects under keys. Safe for concurrent use.
type Store interface {
	// PutIfAbsent stores data under key unless an object is there already, in
	// which case it changes nothing and returns an error matching ErrExists. It
	// returns nil only once the object is durable; a reader sees the whole object
	// or none of it, never part.
	PutIfAbsent(ctx context.Context, key string, data []byte) error
	// Get returns the whole object, or an error matching ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// List returns the objects whose keys start with prefix and sort after
	// after ("" = from the first), in ascending byte order of their keys, at most
	// limit of them (1 to MaxList; 0 means MaxList). More is true when
	// further objects may follow: list again with after = the last key returned.
	List(ctx context.Context, prefix, after string, limit int) (objs []Object, more bool, err error)
	// Delete removes the object under key; removing a missing one is not an error.
	Delete(ctx context.Context, key string) error
}

// Object is one listed object.
type Object struct {
	Key  string `json:"key"`
	Size int64  `json:"size"`
}

// MaxList is the most objects one List returns (S3's page size).
const MaxList = 1000

// MaxKey bounds a key's length in bytes (S3's limit).
const MaxKey = 1024

// Errors the drivers return (wrapped: match with errors.Is).
var (
	ErrExists   = errors.New("blobstore: an object is already stored under this key")
	ErrNotFound = errors.New("blobstore: no object under this key")
	ErrKey      = errors.New("blobstore: invalid key")
)

// CheckKey reports whether key may name an object: 1 to MaxKey bytes of
// '/'-separated segments, each starting with a letter or digit and made of
// letters, digits and ". _ - @ + =" (so no segment is "." or "..", none is
// empty, and a driver can keep names starting with '.' for itself).
func CheckKey(key string) error {
	if len(key) == 0 || len(key) > MaxKey {
		return fmt.Errorf("%w: a key has 1 to %d bytes", ErrKey, MaxKey)
	}
	start := true
	for i := 0; i < len(key); i++ {
		c := key[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		switch {
		case c == '/' && !start:
			start = true
			continue
		case start && !alnum:
			return fmt.Errorf("%w: each '/'-separated segment starts with a letter or digit", ErrKey)
		case !alnum && c != '.' && c != '_' && c != '-' && c != '@' && c != '+' && c != '=':
			return fmt.Errorf("%w: keys are letters, digits, '/' and . _ - @ + =", ErrKey)
		}
		start = false
	}
	if start {
		return fmt.Errorf("%w: a key does not end with '/'", ErrKey)
	}
	return nil
}

// CheckPrefix reports whether prefix may select keys in List: "" or the start
// of a valid key (a whole key, or one ending with '/').
func CheckPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if len(prefix) > 1 && prefix[len(prefix)-1] == '/' {
		return CheckKey(prefix[:len(prefix)-1])
	}
	return CheckKey(prefix)
}

// CheckLimit turns List's limit into the page size, or refuses it.
func CheckLimit(limit int) (int, error) {
	switch {
	case limit == 0:
		return MaxList, nil
	case limit < 0 || limit > MaxList:
		return 0, fmt.Errorf("blobstore: list at most %d objects at a time, not %d", MaxList, limit)
	}
	return limit, nil
}
