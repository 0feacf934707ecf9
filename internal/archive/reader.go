package archive

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// Reader serves archived entries by seq, as a broker does for history its
// store dropped. Each segment is checked (Segment.Check) when it is read; the
// last one read is kept in memory.
type Reader struct {
	a         *Archive
	ledgerKey string

	mu   sync.Mutex
	refs []Ref
	seg  *Segment
}

// NewReader returns a reader of a's segments, checked with ledgerKey (hex).
func NewReader(a *Archive, ledgerKey string) *Reader {
	return &Reader{a: a, ledgerKey: ledgerKey}
}

// Entries returns up to limit archived entries from seq from on, never past
// the end of the segment that holds from; none if no segment holds it.
func (r *Reader) Entries(ctx context.Context, from uint64, limit int) ([]ledger.Entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.seg
	if s == nil || from < s.First || from > s.Last {
		ref, ok := r.find(from)
		if !ok { // segments written since the last listing
			refs, err := r.a.List(ctx)
			if err != nil {
				return nil, err
			}
			r.refs = refs
			if ref, ok = r.find(from); !ok {
				return nil, nil
			}
		}
		var err error
		if s, err = r.a.Get(ctx, ref); err != nil {
			return nil, err
		}
		if err := s.Check(r.ledgerKey); err != nil {
			return nil, fmt.Errorf("the archive %s: %w", r.a.where, err)
		}
		r.seg = s
	}
	i := int(from - s.First)
	j := min(len(s.Entries), i+max(limit, 0))
	return append([]ledger.Entry(nil), s.Entries[i:j]...), nil
}

func (r *Reader) find(seq uint64) (Ref, bool) {
	i := sort.Search(len(r.refs), func(i int) bool { return r.refs[i].Last >= seq })
	if i < len(r.refs) && r.refs[i].First <= seq {
		return r.refs[i], true
	}
	return Ref{}, false
}
