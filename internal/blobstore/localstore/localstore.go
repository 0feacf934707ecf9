// Package localstore is the blobstore driver for one machine: each object is a
// file under a root directory (default under the server's data dir), its key's
// segments the path. A put writes a temporary file beside the object, syncs it,
// links it to its name (link never replaces: put-if-absent is the kernel's) and
// syncs the directory; so an object that was acknowledged survives a crash, and
// an object's name never points at a partial file. Files are 0600, directories
// 0700. Names starting with '.' (temporary files) are never keys.
package localstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/agentkeys/agentkeys/internal/blobstore"
)

// Store is a directory of objects.
type Store struct{ root string }

var _ blobstore.Store = (*Store)(nil)

// Open returns the store rooted at dir, creating it (0700) if needed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("localstore: creating %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	return &Store{root: abs}, nil
}

func (s *Store) path(key string) string { return filepath.Join(s.root, filepath.FromSlash(key)) }

// PutIfAbsent implements blobstore.Store.
func (s *Store) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	if err := blobstore.CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	final := s.path(key)
	dir := filepath.Dir(final)
	if err := s.mkdirs(dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("localstore: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the link, only the temporary name goes
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("localstore: writing %s: %w", key, err)
	}
	if err := os.Link(tmp.Name(), final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", blobstore.ErrExists, key)
		}
		return fmt.Errorf("localstore: storing %s: %w", key, err)
	}
	return syncDir(dir)
}

// mkdirs creates dir and its missing parents under the root, syncing each
// parent that gained an entry, so a new object's path survives a crash.
func (s *Store) mkdirs(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if dir == s.root || parent == dir {
		return nil
	}
	if err := s.mkdirs(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		if errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("%w: a key ends where another begins (an object cannot be a prefix segment here)", blobstore.ErrExists)
		}
		return fmt.Errorf("localstore: %w", err)
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("localstore: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("localstore: syncing %s: %w", dir, err)
	}
	return nil
}

// Get implements blobstore.Store.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	if err := blobstore.CheckKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(s.path(key))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.ENOTDIR) {
		return nil, fmt.Errorf("%w: %s", blobstore.ErrNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("localstore: reading %s: %w", key, err)
	}
	return b, nil
}

// Delete implements blobstore.Store. Emptied directories stay (a put may be
// creating an object in them).
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := blobstore.CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := s.path(key)
	if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
		return nil // nothing (or a prefix, not an object) there
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("localstore: deleting %s: %w", key, err)
	}
	return syncDir(filepath.Dir(p))
}

// List implements blobstore.Store. It walks only the directories that can hold
// keys with prefix and after after, in key order (a directory "a" sorts as
// "a/"), and stops at limit.
func (s *Store) List(ctx context.Context, prefix, after string, limit int) ([]blobstore.Object, bool, error) {
	if err := blobstore.CheckPrefix(prefix); err != nil {
		return nil, false, err
	}
	limit, err := blobstore.CheckLimit(limit)
	if err != nil {
		return nil, false, err
	}
	// Start at the deepest directory every key with prefix is under.
	base := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = prefix[:i+1]
	}
	l := lister{ctx: ctx, prefix: prefix, after: after, limit: limit}
	if err := l.walk(s.path(base), base); err != nil && !errors.Is(err, errFull) {
		return nil, false, err
	}
	return l.out, l.more, nil
}

var errFull = errors.New("page full")

type lister struct {
	ctx           context.Context
	prefix, after string
	limit         int
	out           []blobstore.Object
	more          bool
}

// walk lists directory dir, whose keys start with keyDir ("" or ending in '/').
func (l *lister) walk(dir, keyDir string) error {
	if err := l.ctx.Err(); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("localstore: listing: %w", err)
	}
	type item struct {
		name string // the key, or the key prefix of a directory (ending in '/')
		ent  fs.DirEntry
	}
	items := make([]item, 0, len(ents))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		name := keyDir + e.Name()
		if e.IsDir() {
			name += "/"
		}
		items = append(items, item{name, e})
	}
	slices.SortFunc(items, func(a, b item) int { return strings.Compare(a.name, b.name) })
	for _, it := range items {
		// Skip what cannot match the prefix, and what lies wholly at or before after.
		if !strings.HasPrefix(it.name, l.prefix) && !strings.HasPrefix(l.prefix, it.name) {
			continue
		}
		if it.ent.IsDir() {
			if it.name < l.after && !strings.HasPrefix(l.after, it.name) {
				continue
			}
			if err := l.walk(filepath.Join(dir, it.ent.Name()), it.name); err != nil {
				return err
			}
			continue
		}
		if !it.ent.Type().IsRegular() || it.name <= l.after || !strings.HasPrefix(it.name, l.prefix) {
			continue
		}
		if len(l.out) == l.limit {
			l.more = true
			return errFull
		}
		fi, err := it.ent.Info()
		if errors.Is(err, fs.ErrNotExist) { // deleted meanwhile
			continue
		}
		if err != nil {
			return fmt.Errorf("localstore: listing: %w", err)
		}
		l.out = append(l.out, blobstore.Object{Key: it.name, Size: fi.Size()})
	}
	return nil
}
