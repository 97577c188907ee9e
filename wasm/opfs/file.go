//go:build js

package opfs

import (
	"errors"
	"fmt"
	"sync"
	"syscall/js"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/vfs"
)

// shared is one open file: its sync access handle, SQLite's lock state
// across this worker's connections, and a scratch buffer in JS memory.
type shared struct {
	name          string
	h             js.Value // FileSystemSyncAccessHandle
	refs          int      // guarded by fsys.mu
	deleteOnClose bool     // guarded by fsys.mu

	lockMu   sync.Mutex
	readers  int  // connections holding SHARED or more
	reserved bool // a connection holds RESERVED or more
	pending  bool // a connection holds PENDING or EXCLUSIVE

	ioMu  sync.Mutex
	buf   js.Value         // Uint8Array the I/O goes through
	size  int              // its length
	views map[int]js.Value // buf.subarray(0, n), by n
	at    js.Value         // the {at: offset} options object, reused

	// WAL appends not written yet: a transaction's frames go to the
	// browser in one call, when its commit frame is complete (see
	// WriteAt).
	wal     bool
	pend    []byte
	pendOff int64
	// commitFrame: the frame being appended is a transaction's last.
	commitFrame bool
}

// Scratch buffer sizes: SQLite reads and writes a page (4 KiB by default)
// or a WAL frame header at a time; checkpoints and big blobs grow it.
const (
	initialBuf = 64 << 10
	maxViews   = 32
)

func newShared(name string, h js.Value, wal bool) *shared {
	s := &shared{name: name, h: h, at: js.Global().Get("Object").New(), wal: wal}
	s.grow(initialBuf)
	return s
}

func (s *shared) grow(n int) {
	s.buf = js.Global().Get("Uint8Array").New(n)
	s.size = n
	s.views = make(map[int]js.Value)
}

// view is a Uint8Array of length n over the scratch buffer. Views are
// cached: creating one is a call into JS, and most I/O is page-sized.
func (s *shared) view(n int) js.Value {
	if n > s.size {
		s.grow(max(n, 2*s.size))
	}
	if n == s.size {
		return s.buf
	}
	if v, ok := s.views[n]; ok {
		return v
	}
	v := s.buf.Call("subarray", 0, n)
	if len(s.views) < maxViews {
		s.views[n] = v
	}
	return v
}

func (s *shared) close() error {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	err := s.flushPending()
	if _, cerr := call(s.h, "close"); cerr != nil {
		err = errors.Join(err, fmt.Errorf("opfs: closing %s: %w", s.name, cerr))
	}
	return err
}

// file is one connection's use of a shared file.
type file struct {
	*shared
	fs   *fsys
	lock vfs.LockLevel
}

var (
	_ vfs.File          = (*file)(nil)
	_ vfs.FileLockState = (*file)(nil)
)

func (f *file) Close() error {
	return errors.Join(f.Unlock(vfs.LOCK_NONE), f.fs.release(f.shared))
}

// SectorSize is SQLite's default; it only pads rollback journal headers.
func (f *file) SectorSize() int { return 4096 }

// DeviceCharacteristics: writing a page never damages its neighbours, as
// on the file systems OPFS stores its files on.
func (f *file) DeviceCharacteristics() vfs.DeviceCharacteristic {
	return vfs.IOCAP_POWERSAFE_OVERWRITE
}

func (f *file) LockState() vfs.LockLevel { return f.lock }

// Lock takes SQLite's lock levels among this worker's connections to the
// file (other tabs are kept out by the Web Lock). It never waits: BUSY
// lets SQLite's busy handler retry.
func (f *file) Lock(level vfs.LockLevel) error {
	if f.lock >= level {
		return nil
	}
	f.lockMu.Lock()
	defer f.lockMu.Unlock()
	switch level {
	case vfs.LOCK_SHARED:
		if f.pending {
			return sqlite3.BUSY
		}
		f.readers++
	case vfs.LOCK_RESERVED:
		if f.reserved {
			return sqlite3.BUSY
		}
		f.reserved = true
	case vfs.LOCK_EXCLUSIVE:
		if f.lock < vfs.LOCK_RESERVED {
			// Straight from SHARED (a hot journal's rollback): take
			// RESERVED on the way, so unlocking has one path.
			if f.reserved {
				return sqlite3.BUSY
			}
			f.reserved = true
			f.lock = vfs.LOCK_RESERVED
		}
		// PENDING keeps new readers out while the others finish.
		f.pending = true
		f.lock = vfs.LOCK_PENDING
		if f.readers > 1 {
			return sqlite3.BUSY
		}
	default:
		return sqlite3.MISUSE
	}
	f.lock = level
	return nil
}

func (f *file) Unlock(level vfs.LockLevel) error {
	if f.lock <= level {
		return nil
	}
	f.lockMu.Lock()
	defer f.lockMu.Unlock()
	if f.lock >= vfs.LOCK_PENDING {
		f.pending = false
	}
	if f.lock >= vfs.LOCK_RESERVED && level < vfs.LOCK_RESERVED {
		f.reserved = false
	}
	if level == vfs.LOCK_NONE {
		f.readers--
	}
	f.lock = level
	return nil
}

func (f *file) CheckReservedLock() (bool, error) {
	f.lockMu.Lock()
	defer f.lockMu.Unlock()
	return f.reserved, nil
}
