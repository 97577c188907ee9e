//go:build js

package opfs

import (
	"fmt"
	"io"
	"syscall/js"
	"time"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/vfs"
)

// WAL layout: a 32-byte file header, then frames of a 24-byte header and
// a page. A frame header's bytes 4-7 hold the database size after the
// commit for a transaction's last frame, 0 for the others.
const (
	walFrameHeader = 24
	maxPending     = 4 << 20
)

// Each call into a sync access handle costs 30-40 µs in Chromium whatever
// its size (a millisecond and more behind the IPC of an incognito
// window's in-memory OPFS), and SQLite writes a WAL frame in two calls,
// header and page: a send that touches ten pages would cost twenty calls.
// So WriteAt gathers a transaction's appends to the WAL and hands them to
// the browser in one call once the commit frame is complete, before
// SQLite goes on (and so before the commit is acknowledged): a killed tab
// loses nothing committed, and a failed write fails the commit. Any other
// operation on the file (read, size, truncate, sync, close) writes out
// what is gathered first; a long transaction goes out every few MiB.

func (f *file) ReadAt(b []byte, off int64) (int, error) {
	f.ioMu.Lock()
	defer f.ioMu.Unlock()
	if err := f.flushPending(); err != nil {
		return 0, err
	}
	defer timed(&counters.syncIO, time.Now())
	counters.reads.Add(1)
	counters.readBytes.Add(int64(len(b)))
	v := f.view(len(b))
	f.at.Set("at", off)
	r, err := call(f.h, "read", v, f.at)
	if err != nil {
		return 0, vfs.SystemError(fmt.Errorf("opfs: reading %s: %w", f.name, err), sqlite3.IOERR_READ)
	}
	n := r.Int()
	js.CopyBytesToGo(b[:n], v)
	if n < len(b) {
		clear(b[n:])
		return n, io.EOF
	}
	return n, nil
}

func (f *file) WriteAt(b []byte, off int64) (int, error) {
	f.ioMu.Lock()
	defer f.ioMu.Unlock()
	if !f.wal {
		if err := f.write(b, off); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	end := f.pendOff + int64(len(f.pend))
	switch {
	case len(f.pend) > 0 && off == end:
		f.pend = append(f.pend, b...) // the next append
	case len(f.pend) > 0 && off >= f.pendOff && off+int64(len(b)) <= end:
		copy(f.pend[off-f.pendOff:], b) // a frame of this transaction rewritten
		return len(b), nil
	default:
		if err := f.flushPending(); err != nil {
			return 0, err
		}
		f.pend = append(f.pend[:0], b...)
		f.pendOff = off
	}
	if len(b) == walFrameHeader {
		f.commitFrame = b[4]|b[5]|b[6]|b[7] != 0
		return len(b), nil
	}
	if f.commitFrame || len(f.pend) >= maxPending {
		if err := f.flushPending(); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// flushPending writes out the gathered WAL appends. The caller holds ioMu.
func (s *shared) flushPending() error {
	if len(s.pend) == 0 {
		return nil
	}
	err := s.write(s.pend, s.pendOff)
	s.pend, s.commitFrame = s.pend[:0], false
	if cap(s.pend) > maxPending {
		s.pend = nil // a long transaction's buffer: give it back
	}
	return err
}

// write is one call to the handle's write. The caller holds ioMu.
func (s *shared) write(b []byte, off int64) error {
	defer timed(&counters.syncIO, time.Now())
	counters.writes.Add(1)
	counters.writeBytes.Add(int64(len(b)))
	v := s.view(len(b))
	js.CopyBytesToJS(v, b)
	s.at.Set("at", off)
	r, err := call(s.h, "write", v, s.at)
	if err != nil {
		err = fmt.Errorf("opfs: writing %s: %w", s.name, err)
		if isJSError(err, errQuota) {
			return vfs.SystemError(err, sqlite3.FULL)
		}
		return vfs.SystemError(err, sqlite3.IOERR_WRITE)
	}
	if n := r.Int(); n != len(b) {
		// The browser writes short only when the origin's quota is spent.
		return vfs.SystemError(fmt.Errorf("opfs: writing %s: wrote %d of %d bytes", s.name, n, len(b)), sqlite3.FULL)
	}
	return nil
}

func (f *file) Truncate(size int64) error {
	f.ioMu.Lock()
	defer f.ioMu.Unlock()
	if err := f.flushPending(); err != nil {
		return err
	}
	defer timed(&counters.syncIO, time.Now())
	counters.truncates.Add(1)
	if _, err := call(f.h, "truncate", size); err != nil {
		return vfs.SystemError(fmt.Errorf("opfs: truncating %s: %w", f.name, err), sqlite3.IOERR_TRUNCATE)
	}
	return nil
}

// Sync is durability: flush persists what was written to the handle.
func (f *file) Sync(vfs.SyncFlag) error {
	f.ioMu.Lock()
	defer f.ioMu.Unlock()
	if err := f.flushPending(); err != nil {
		return err
	}
	defer timed(&counters.syncIO, time.Now())
	counters.flushes.Add(1)
	if _, err := call(f.h, "flush"); err != nil {
		return vfs.SystemError(fmt.Errorf("opfs: flushing %s: %w", f.name, err), sqlite3.IOERR_FSYNC)
	}
	return nil
}

func (f *file) Size() (int64, error) {
	f.ioMu.Lock()
	defer f.ioMu.Unlock()
	if err := f.flushPending(); err != nil {
		return 0, err
	}
	defer timed(&counters.syncIO, time.Now())
	counters.sizes.Add(1)
	r, err := call(f.h, "getSize")
	if err != nil {
		return 0, vfs.SystemError(fmt.Errorf("opfs: size of %s: %w", f.name, err), sqlite3.IOERR_FSTAT)
	}
	return int64(r.Float()), nil
}
