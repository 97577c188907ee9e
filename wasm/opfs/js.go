//go:build js

package opfs

import (
	"errors"
	"fmt"
	"syscall/js"
	"time"
)

// DOMException names this package tells apart.
const (
	errNotFound       = "NotFoundError"
	errNoModification = "NoModificationAllowedError"
	errInvalidState   = "InvalidStateError"
	errQuota          = "QuotaExceededError"
	errTypeMismatch   = "TypeMismatchError"
)

// jsError is an exception thrown or a rejection raised by the browser.
type jsError struct {
	name, message string
}

func (e *jsError) Error() string { return e.name + ": " + e.message }

// isJSError reports whether err is a browser exception named name.
func isJSError(err error, name string) bool {
	var je *jsError
	return errors.As(err, &je) && je.name == name
}

func toError(v js.Value) error {
	if v.Type() != js.TypeObject {
		return &jsError{name: "Error", message: v.String()}
	}
	return &jsError{name: v.Get("name").String(), message: v.Get("message").String()}
}

// call runs v.method(args...) and turns a thrown exception into an error
// (syscall/js panics with it).
func call(v js.Value, method string, args ...any) (res js.Value, err error) {
	defer func() {
		if r := recover(); r != nil {
			if je, ok := r.(js.Error); ok {
				err = toError(je.Value)
				return
			}
			err = fmt.Errorf("%s: %v", method, r)
		}
	}()
	return v.Call(method, args...), nil
}

// await blocks the calling goroutine until the promise settles. The Go
// runtime returns to the browser's event loop while every goroutine waits,
// which is what lets the promise settle; so await must never run inside a
// js.FuncOf callback (the event loop cannot run until the callback returns:
// deadlock).
func await(p js.Value) (js.Value, error) {
	defer timed(&counters.asyncWait, time.Now())
	counters.async.Add(1)
	type result struct {
		v   js.Value
		err error
	}
	ch := make(chan result, 1)
	onOK := js.FuncOf(func(_ js.Value, args []js.Value) any {
		v := js.Undefined()
		if len(args) > 0 {
			v = args[0]
		}
		ch <- result{v: v}
		return nil
	})
	defer onOK.Release()
	onErr := js.FuncOf(func(_ js.Value, args []js.Value) any {
		v := js.Undefined()
		if len(args) > 0 {
			v = args[0]
		}
		ch <- result{err: toError(v)}
		return nil
	})
	defer onErr.Release()
	if _, err := call(p, "then", onOK, onErr); err != nil {
		return js.Value{}, err
	}
	r := <-ch
	return r.v, r.err
}

// callAwait calls an async method and waits for its promise.
func callAwait(v js.Value, method string, args ...any) (js.Value, error) {
	p, err := call(v, method, args...)
	if err != nil {
		return js.Value{}, err
	}
	return await(p)
}
