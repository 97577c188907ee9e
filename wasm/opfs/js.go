//go:build js

package opfs

import (
	"syscall/js"
	"time"

	"hearth/wasm/jscall"
)

// DOMException names this package tells apart.
const (
	errNotFound       = "NotFoundError"
	errNoModification = "NoModificationAllowedError"
	errInvalidState   = "InvalidStateError"
	errQuota          = "QuotaExceededError"
	errTypeMismatch   = "TypeMismatchError"
)

// isJSError reports whether err is a browser exception named name.
func isJSError(err error, name string) bool { return jscall.Is(err, name) }

// call runs v.method(args...); a thrown exception is an error.
func call(v js.Value, method string, args ...any) (js.Value, error) {
	return jscall.Call(v, method, args...)
}

// await waits for a promise (see jscall.Await), counted in Stats.
func await(p js.Value) (js.Value, error) {
	defer timed(&counters.asyncWait, time.Now())
	counters.async.Add(1)
	return jscall.Await(p)
}

// callAwait calls an async method and waits for its promise.
func callAwait(v js.Value, method string, args ...any) (js.Value, error) {
	p, err := call(v, method, args...)
	if err != nil {
		return js.Value{}, err
	}
	return await(p)
}
