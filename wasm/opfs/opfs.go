//go:build js

// Package opfs is a SQLite VFS (for github.com/ncruces/go-sqlite3) over the
// browser's Origin Private File System, using FileSystemSyncAccessHandle:
// synchronous read, write, truncate, flush and getSize, which browsers offer
// only in dedicated workers. Importing it registers the VFS as "opfs":
//
//	storage.Open(storage.Options{Path: "/hearth.db", VFS: opfs.Name, Exclusive: true})
//
// A commit is durable when SQLite's xSync (FileSystemSyncAccessHandle.flush)
// returns; with WAL and synchronous=NORMAL a killed tab loses nothing
// committed (the writes are in the file), a power cut may lose the last
// commits.
//
// Locking: a file has at most one sync access handle (a second one throws
// NoModificationAllowedError), here shared by every connection of this
// worker to that file, with SQLite's lock levels kept in memory. Nothing
// here locks across tabs: the node worker must hold a Web Lock for the
// database before opening it, so one worker per origin owns the files.
// There is no shared memory, so WAL needs locking_mode=EXCLUSIVE and one
// connection (storage.Options.Exclusive).
//
// Opening, probing and deleting files are asynchronous in the browser:
// those calls block the calling goroutine on a Promise. Never call into
// SQLite from inside a js.FuncOf callback; start a goroutine.
//
// Each sync call costs 30-40 µs in Chromium whatever its size (1 ms and
// more in incognito windows, whose OPFS lives in memory behind IPC), so
// the VFS sends a WAL frame header together with its page; ReadStats tells
// how much of SQLite's time went to the browser.
//
// When OPFS is missing (Available is false), callers fall back to the
// memdb VFS, without Exclusive (node/storage turns WAL on, which memdb in
// exclusive mode cannot hold), and tell the user the node is not
// persistent. This package must not import hearth/node or hearth/p2p.
package opfs

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"syscall/js"

	"github.com/ncruces/go-sqlite3/vfs"
)

// Name is the name the VFS is registered under.
const Name = "opfs"

// theFS is the one VFS instance: it knows which files this worker has open.
var theFS = &fsys{files: make(map[string]*shared)}

func init() { vfs.Register(Name, theFS) }

// ErrUnavailable is returned when this context has no OPFS with sync access
// handles (not a dedicated worker, an old browser, or storage refused).
var ErrUnavailable = errors.New("opfs: the Origin Private File System with sync access handles is not available here")

var root struct {
	mu  sync.Mutex
	dir js.Value // FileSystemDirectoryHandle, once known
	ok  bool
}

// Available reports whether the OPFS VFS can work in this context: a
// dedicated worker of a browser with FileSystemSyncAccessHandle, and an
// origin allowed to use storage. It waits for the browser (call it from a
// goroutine, not a js.FuncOf callback). When false, use the memdb VFS and
// warn that nothing persists.
func Available() bool {
	_, err := rootDir()
	return err == nil
}

// rootDir is the origin's OPFS root directory.
func rootDir() (js.Value, error) {
	root.mu.Lock()
	defer root.mu.Unlock()
	if root.ok {
		return root.dir, nil
	}
	g := js.Global()
	if g.Get("FileSystemSyncAccessHandle").Type() != js.TypeFunction {
		return js.Value{}, ErrUnavailable
	}
	storage := g.Get("navigator").Get("storage")
	if storage.Type() != js.TypeObject || storage.Get("getDirectory").Type() != js.TypeFunction {
		return js.Value{}, ErrUnavailable
	}
	dir, err := callAwait(storage, "getDirectory")
	if err != nil {
		return js.Value{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	root.dir, root.ok = dir, true
	return dir, nil
}

// clean is the canonical form of a file name: absolute, slash-separated.
func clean(name string) string { return path.Clean("/" + name) }

// parentDir walks (creating if asked) the directories of a cleaned name
// and returns the last one and the file's base name.
func parentDir(name string, create bool) (js.Value, string, error) {
	dir, err := rootDir()
	if err != nil {
		return js.Value{}, "", err
	}
	parts := strings.Split(strings.TrimPrefix(name, "/"), "/")
	base := parts[len(parts)-1]
	if base == "" || base == "." || base == ".." {
		return js.Value{}, "", fmt.Errorf("opfs: %q names no file", name)
	}
	opts := js.Global().Get("Object").New()
	opts.Set("create", create)
	for _, p := range parts[:len(parts)-1] {
		if dir, err = callAwait(dir, "getDirectoryHandle", p, opts); err != nil {
			return js.Value{}, "", err
		}
	}
	return dir, base, nil
}

// Remove deletes a database file and its -wal and -journal companions, for
// a user's "reset"; it fails while the database is open. Missing files are
// not an error.
func Remove(name string) error {
	name = clean(name)
	theFS.mu.Lock()
	defer theFS.mu.Unlock()
	var errs []error
	for _, n := range []string{name, name + "-wal", name + "-journal"} {
		if _, open := theFS.files[n]; open {
			errs = append(errs, fmt.Errorf("opfs: %s is open", n))
			continue
		}
		if err := removeFile(n); err != nil && !errors.Is(err, errNoEntry) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
