//go:build js

package opfs_test

import (
	"errors"
	"testing"

	"hearth/node/storage"
	"hearth/wasm/opfs"
)

// These run under Node (GOOS=js GOARCH=wasm go test, with
// $(go env GOROOT)/lib/wasm on PATH), which has no OPFS: the fallback
// decision and the failure must be clean there. The VFS itself is proven
// in Chromium by web/test/browser-probe.test.mjs.

func TestUnavailableOutsideADedicatedWorker(t *testing.T) {
	if opfs.Available() {
		t.Fatal("Available() is true without FileSystemSyncAccessHandle")
	}
}

func TestOpenFailsCleanlyWithoutOPFS(t *testing.T) {
	db, err := storage.Open(storage.Options{Path: "/hearth.db", VFS: opfs.Name, Exclusive: true})
	if err == nil {
		db.Close()
		t.Fatal("opened a database on OPFS without OPFS")
	}
	// The reason reaches the caller, for the "not persistent" warning.
	if !errors.Is(err, opfs.ErrUnavailable) {
		t.Fatalf("error %q does not wrap opfs.ErrUnavailable", err)
	}
}
