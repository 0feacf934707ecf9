package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
)

// State is the key-value view of folded ledger state that kinds read and write.
// Keys are ASCII paths such as "account/<omni>"; values are JSON.
type State interface {
	Get(key string) (value []byte, ok bool, err error)
	Put(key string, value []byte) error
	Delete(key string) error
	// Scan calls fn for every key with the prefix, in ascending key order.
	Scan(prefix string, fn func(key string, value []byte) error) error
}

// PutJSON stores v as JSON under key.
func PutJSON(st State, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return st.Put(key, b)
}

// GetJSON loads key into v; ok is false when the key does not exist.
func GetJSON(st State, key string, v any) (ok bool, err error) {
	b, ok, err := st.Get(key)
	if err != nil || !ok {
		return false, err
	}
	return true, json.Unmarshal(b, v)
}

// ListJSON decodes every value under prefix, in key order (never nil).
func ListJSON[T any](st State, prefix string) ([]T, error) {
	out := []T{}
	err := st.Scan(prefix, func(_ string, v []byte) error {
		var x T
		if err := json.Unmarshal(v, &x); err != nil {
			return err
		}
		out = append(out, x)
		return nil
	})
	return out, err
}

func decodeStrict(p []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// MemState is an in-memory State, used to re-fold a chain when verifying it.
type MemState struct{ m map[string][]byte }

// NewMemState returns an empty MemState.
func NewMemState() *MemState { return &MemState{m: map[string][]byte{}} }

// Get implements State.
func (s *MemState) Get(key string) ([]byte, bool, error) {
	v, ok := s.m[key]
	return v, ok, nil
}

// Put implements State.
func (s *MemState) Put(key string, value []byte) error {
	s.m[key] = slices.Clone(value)
	return nil
}

// Delete implements State.
func (s *MemState) Delete(key string) error {
	delete(s.m, key)
	return nil
}

// Scan implements State.
func (s *MemState) Scan(prefix string, fn func(string, []byte) error) error {
	keys := slices.Sorted(maps.Keys(s.m))
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			if err := fn(k, s.m[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

// Reader is read access to committed state; drivers implement it.
type Reader interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error
}

// View adapts committed state to the State interface for reading; writes fail.
func View(ctx context.Context, r Reader) State { return readView{ctx, r} }

type readView struct {
	ctx context.Context
	r   Reader
}

func (v readView) Get(key string) ([]byte, bool, error) { return v.r.Get(v.ctx, key) }
func (v readView) Scan(p string, fn func(string, []byte) error) error {
	return v.r.Scan(v.ctx, p, fn)
}
func (v readView) Put(string, []byte) error { return errReadOnly }
func (v readView) Delete(string) error      { return errReadOnly }

var errReadOnly = errorString("ledger: state view is read-only")

type errorString string

func (e errorString) Error() string { return string(e) }

// overlay buffers writes on top of a base State. Folds write into an overlay so a
// rejected entry leaves nothing behind; accepted overlays merge into their parent.
type overlay struct {
	base   State
	writes map[string][]byte // nil value = deleted
}

func newOverlay(base State) *overlay { return &overlay{base: base, writes: map[string][]byte{}} }

func (o *overlay) Get(key string) ([]byte, bool, error) {
	if v, ok := o.writes[key]; ok {
		return v, v != nil, nil
	}
	return o.base.Get(key)
}

func (o *overlay) Put(key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	o.writes[key] = slices.Clone(value)
	return nil
}

func (o *overlay) Delete(key string) error {
	o.writes[key] = nil
	return nil
}

func (o *overlay) Scan(prefix string, fn func(string, []byte) error) error {
	merged := map[string][]byte{}
	if err := o.base.Scan(prefix, func(k string, v []byte) error {
		merged[k] = slices.Clone(v)
		return nil
	}); err != nil {
		return err
	}
	for k, v := range o.writes {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if v == nil {
			delete(merged, k)
		} else {
			merged[k] = v
		}
	}
	for _, k := range slices.Sorted(maps.Keys(merged)) {
		if err := fn(k, merged[k]); err != nil {
			return err
		}
	}
	return nil
}

// mergeInto applies this overlay's writes to its parent overlay.
func (o *overlay) mergeInto(parent *overlay) {
	maps.Copy(parent.writes, o.writes)
}

// list returns the buffered writes in key order.
func (o *overlay) list() []Write {
	out := make([]Write, 0, len(o.writes))
	for _, k := range slices.Sorted(maps.Keys(o.writes)) {
		out = append(out, Write{Key: k, Value: o.writes[k]})
	}
	return out
}

// BlobPrefix is where content-addressed blobs (credential ciphertexts) live in
// state. Blobs are written beside an entry (AppendBlob), never folded from one, so
// re-folding skips them and checks only that each blob matches its hash.
const BlobPrefix = "blob/"

// BlobKey is the state key of the blob whose SHA-256 is hexHash.
func BlobKey(hexHash string) string { return BlobPrefix + hexHash }
