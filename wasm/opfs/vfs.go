//go:build js

package opfs

import (
	"errors"
	"fmt"
	"sync"
	"syscall/js"
	"time"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"
)

// handleWait bounds how long Open retries while another handle holds the
// file: the previous worker of this origin may still be going away (a
// reload) when the new one, already holding the Web Lock, opens the file.
const handleWait = 5 * time.Second

// fsys is the VFS. It keeps one sync access handle per open file, shared by
// every connection of this worker (the browser allows only one).
type fsys struct {
	mu    sync.Mutex // guards files; held across opening and closing handles
	files map[string]*shared
}

var (
	_ vfs.VFS = (*fsys)(nil)

	errNoEntry = errors.New("opfs: no such file")
)

// Open opens (or creates) a file. Temporary files (sorter, temp tables,
// statement journals) live in memory: nothing needs them after a crash.
func (fs *fsys) Open(name string, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	const temporary = vfs.OPEN_TEMP_DB | vfs.OPEN_TRANSIENT_DB | vfs.OPEN_TEMP_JOURNAL | vfs.OPEN_SUBJOURNAL
	if name == "" || flags&temporary != 0 {
		return &vfsutil.SliceFile{}, flags | vfs.OPEN_MEMORY, nil
	}
	name = clean(name)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	s := fs.files[name]
	if s == nil {
		h, err := openHandle(name, flags&vfs.OPEN_CREATE != 0)
		if err != nil {
			if errors.Is(err, errNoEntry) {
				return nil, flags, sqlite3.CANTOPEN
			}
			return nil, flags, vfs.SystemError(fmt.Errorf("opfs: opening %s: %w", name, err), sqlite3.CANTOPEN)
		}
		s = newShared(name, h, flags&vfs.OPEN_WAL != 0)
		fs.files[name] = s
	}
	s.refs++
	if flags&vfs.OPEN_DELETEONCLOSE != 0 {
		s.deleteOnClose = true
	}
	return &file{shared: s, fs: fs}, flags, nil
}

// openHandle gets the file's handle and its sync access handle (or the
// one the worker opened beforehand, see PreopenedGlobal).
func openHandle(name string, create bool) (js.Value, error) {
	if h, ok := takePreopened(name); ok {
		return h, nil
	}
	dir, base, err := parentDir(name, create)
	if err != nil {
		if isJSError(err, errNotFound) {
			return js.Value{}, errNoEntry
		}
		return js.Value{}, err
	}
	opts := js.Global().Get("Object").New()
	opts.Set("create", create)
	fh, err := callAwait(dir, "getFileHandle", base, opts)
	if err != nil {
		if isJSError(err, errNotFound) {
			return js.Value{}, errNoEntry
		}
		return js.Value{}, err
	}
	deadline := time.Now().Add(handleWait)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		h, err := callAwait(fh, "createSyncAccessHandle")
		if err == nil {
			return h, nil
		}
		if !isJSError(err, errNoModification) || time.Now().After(deadline) {
			return js.Value{}, err
		}
		time.Sleep(wait)
	}
}

// release drops one connection's use of s, closing the handle with the
// last one.
func (fs *fsys) release(s *shared) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if s.refs--; s.refs > 0 {
		return nil
	}
	delete(fs.files, s.name)
	err := s.close()
	if s.deleteOnClose {
		if rerr := removeFile(s.name); rerr != nil && !errors.Is(rerr, errNoEntry) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// Delete removes a file (SQLite deletes journals and the -wal file this
// way, after closing them).
func (fs *fsys) Delete(name string, _ bool) error {
	name = clean(name)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if _, open := fs.files[name]; open {
		return vfs.SystemError(fmt.Errorf("opfs: cannot delete %s while it is open", name), sqlite3.IOERR_DELETE)
	}
	err := removeFile(name)
	if errors.Is(err, errNoEntry) {
		return sqlite3.IOERR_DELETE_NOENT
	}
	if err != nil {
		return vfs.SystemError(fmt.Errorf("opfs: deleting %s: %w", name, err), sqlite3.IOERR_DELETE)
	}
	return nil
}

func removeFile(name string) error {
	dir, base, err := parentDir(name, false)
	if err == nil {
		_, err = callAwait(dir, "removeEntry", base)
	}
	if isJSError(err, errNotFound) {
		return errNoEntry
	}
	return err
}

// Access reports whether a file exists (SQLite asks about journals and the
// -wal file). Every file of ours is readable and writable.
func (fs *fsys) Access(name string, _ vfs.AccessFlag) (bool, error) {
	name = clean(name)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if _, open := fs.files[name]; open || isPreopened(name) {
		return true, nil
	}
	dir, base, err := parentDir(name, false)
	if err == nil {
		_, err = callAwait(dir, "getFileHandle", base)
	}
	switch {
	case err == nil:
		return true, nil
	case isJSError(err, errNotFound), isJSError(err, errTypeMismatch):
		return false, nil
	default:
		return false, vfs.SystemError(fmt.Errorf("opfs: probing %s: %w", name, err), sqlite3.IOERR_ACCESS)
	}
}

// FullPathname makes names absolute within the origin's OPFS root.
func (fs *fsys) FullPathname(name string) (string, error) { return clean(name), nil }
