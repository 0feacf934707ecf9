// Package atomicfile writes whole files so that a crash or a concurrent reader
// never sees half of one.
//
// Both functions write the data to a temporary file in the target's directory
// (so the final step stays on one file system), set its mode with fchmod (so
// the process umask does not change it), fsync it, move it into place and fsync
// the directory so the new name is durable:
//
//   - WriteFile moves it with rename(2): the target is replaced, and a crash
//     leaves the old file or the new one.
//   - CreateNew moves it with link(2), which fails if the target exists: an
//     existing file is never replaced, even by a racing process. Keys and the
//     sealed seed are created this way.
//
// It is a leaf package: it imports only the standard library.
package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, mode perm exactly (the umask does not
// apply). A crash at any point leaves the old file or the new one; the
// temporary file is removed on failure.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return write(path, data, perm, os.Rename)
}

// CreateNew creates path holding data, mode perm exactly, and never replaces an
// existing file: if path exists it returns an error wrapping fs.ErrExist and
// leaves that file untouched. On a file system without hard links it falls
// back to creating path with O_EXCL (still never replacing, but no longer
// atomic against a crash mid-write).
func CreateNew(path string, data []byte, perm fs.FileMode) error {
	return write(path, data, perm, func(tmp, path string) error {
		err := os.Link(tmp, path)
		if err == nil || errors.Is(err, fs.ErrExist) {
			return err
		}
		return writeExcl(path, data, perm)
	})
}

// write writes data to a temporary file beside path and hands it to commit,
// which moves it to path; the temporary name is removed in every case.
func write(path string, data []byte, perm fs.FileMode, commit func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // O_EXCL, 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after link: only the temporary name goes; after rename: nothing left
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := writeSynced(f, data); err != nil {
		return err
	}
	if err := commit(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// writeExcl writes data to a new file created with O_EXCL, mode perm exactly.
func writeExcl(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := writeSynced(f, data); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// writeSynced writes data to f, syncs it to disk and closes it.
func writeSynced(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir fsyncs a directory so that a new entry in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
