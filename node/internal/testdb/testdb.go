// Package testdb says where a test's database lives, for tests only: a
// file in the test's temporary directory, or, under js/wasm (to profile
// the core as the browser runs it), an in-memory database, since SQLite's
// file VFS cannot lock there. It imports storage only, so any test but
// storage's own may use it.
package testdb

import (
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	_ "github.com/ncruces/go-sqlite3/vfs/memdb" // the database under js/wasm

	"hearth/node/storage"
)

var seq atomic.Int64

// Options returns the storage options of a fresh database for t.
func Options(t testing.TB) storage.Options {
	if runtime.GOOS == "js" {
		return storage.Options{Path: fmt.Sprintf("/test%d.db", seq.Add(1)), VFS: "memdb"}
	}
	return storage.Options{Path: filepath.Join(t.TempDir(), "hearth.db")}
}
