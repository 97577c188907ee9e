//go:build js

package opfs

import (
	"sync"
	"syscall/js"
)

// PreopenedGlobal names the JS global through which the page's worker
// hands over sync access handles it opened itself, before this program
// ran: an object from file names ("/hearth.db") to
// FileSystemSyncAccessHandles. Opening a handle takes two asynchronous
// calls, each a trip through the browser's storage service (milliseconds,
// and a hundred or more on a busy machine); the worker makes them while
// the wasm downloads and compiles, so they are off the node's start path.
// Open takes a handle from there (once) instead of opening the file.
const PreopenedGlobal = "hearthOPFSHandles"

var preopened struct {
	mu    sync.Mutex
	taken map[string]bool
}

// takePreopened returns the handle the worker opened for name, if any and
// not taken yet: a handle serves one open file, and SQLite reopening a
// file it closed must get a fresh one.
func takePreopened(name string) (js.Value, bool) {
	preopened.mu.Lock()
	defer preopened.mu.Unlock()
	if preopened.taken[name] {
		return js.Value{}, false
	}
	m := js.Global().Get(PreopenedGlobal)
	if m.Type() != js.TypeObject {
		return js.Value{}, false
	}
	h := m.Get(name)
	if h.Type() != js.TypeObject {
		return js.Value{}, false
	}
	if preopened.taken == nil {
		preopened.taken = map[string]bool{}
	}
	preopened.taken[name] = true
	m.Delete(name)
	return h, true
}

// isPreopened reports whether the worker holds a handle for name (so the
// file exists).
func isPreopened(name string) bool {
	m := js.Global().Get(PreopenedGlobal)
	return m.Type() == js.TypeObject && m.Get(name).Type() == js.TypeObject
}
