package sqlite

import (
	"fmt"
	"os"
	"sync"
	"syscall"
)

// fileLock is this process's exclusive flock on a ledger's lock file: it keeps
// every other process out, while the handles this process opens on the file
// share it (they stay one chain through SQLite's write lock and the head check
// in Commit).
type fileLock struct {
	f  *os.File
	id fileID
	n  int // handles holding it
}

type fileID struct{ dev, ino uint64 }

// locks are this process's held locks by lock file.
var locks = struct {
	sync.Mutex
	m map[fileID]*fileLock
}{m: map[fileID]*fileLock{}}

// lockFile takes (or shares) the lock on path, creating the file 0600.
func lockFile(path string) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	id := fileID{uint64(st.Dev), st.Ino}
	locks.Lock()
	defer locks.Unlock()
	if l := locks.m[id]; l != nil {
		f.Close()
		l.n++
		return l, nil
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, ErrLocked
	}
	l := &fileLock{f: f, id: id, n: 1}
	locks.m[id] = l
	return l, nil
}

// release drops one handle's share; the last one unlocks the file.
func (l *fileLock) release() error {
	locks.Lock()
	defer locks.Unlock()
	if l.n--; l.n > 0 {
		return nil
	}
	delete(locks.m, l.id)
	return l.f.Close()
}
