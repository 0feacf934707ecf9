package ledger

import (
	"context"
	"errors"
)

// Driver stores entries and folded state. Implementations: sqlite (embedded) and
// postgres (shared by several processes). Every driver must pass ledgertest.Run.
type Driver interface {
	Reader
	// Head returns the newest entry's position; ok is false on an empty ledger.
	Head(ctx context.Context) (h Head, ok bool, err error)
	// Entries returns up to limit entries with seq >= from, ascending.
	Entries(ctx context.Context, from uint64, limit int) ([]Entry, error)
	// Commit durably appends entries (contiguous, the first one linking to the current
	// head) and applies writes, all in one transaction. If the head is not what the
	// entries link to, it returns ErrConflict and changes nothing.
	Commit(ctx context.Context, entries []Entry, writes []Write) error
	Close() error
}

// Head is the position of the newest entry.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash Hash   `json:"hash"`
	Time int64  `json:"-"`
}

// Write is one state change; a nil Value deletes the key.
type Write struct {
	Key   string
	Value []byte
}

// ErrConflict means the ledger head moved: the entries do not link to it.
var ErrConflict = errors.New("ledger: head moved, entries do not link to it")

// ErrUnreachable is wrapped by a driver's open when its store (a database server)
// cannot be reached: the caller reports it as such, not as a broken store.
var ErrUnreachable = errors.New("the ledger store is unreachable")
