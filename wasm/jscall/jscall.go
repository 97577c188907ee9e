//go:build js

// Package jscall calls into the browser from Go goroutines: methods that
// may throw, and promises awaited without blocking the event loop. It is
// platform code for the browser node's edge (wasm/ and its packages) and
// must not import any other hearth package.
package jscall

import (
	"errors"
	"fmt"
	"syscall/js"
)

// Error is an exception thrown or a rejection raised by the browser (a
// DOMException, mostly).
type Error struct {
	Name, Message string
}

func (e *Error) Error() string { return e.Name + ": " + e.Message }

// Is reports whether err is a browser exception named name
// ("NotFoundError", "QuotaExceededError", …).
func Is(err error, name string) bool {
	var je *Error
	return errors.As(err, &je) && je.Name == name
}

// ErrorOf turns a thrown or rejected value into an *Error.
func ErrorOf(v js.Value) error {
	if v.Type() != js.TypeObject {
		return &Error{Name: "Error", Message: v.String()}
	}
	return &Error{Name: v.Get("name").String(), Message: v.Get("message").String()}
}

// Call runs v.method(args...) and turns a thrown exception into an error
// (syscall/js panics with it).
func Call(v js.Value, method string, args ...any) (res js.Value, err error) {
	defer func() {
		if r := recover(); r != nil {
			if je, ok := r.(js.Error); ok {
				err = ErrorOf(je.Value)
				return
			}
			err = fmt.Errorf("%s: %v", method, r)
		}
	}()
	return v.Call(method, args...), nil
}

// Await blocks the calling goroutine until the promise p settles. The Go
// runtime returns to the browser's event loop while every goroutine waits,
// which is what lets p settle; so Await must never run inside a js.FuncOf
// callback (the event loop cannot run until the callback returns:
// deadlock).
func Await(p js.Value) (js.Value, error) {
	type result struct {
		v   js.Value
		err error
	}
	ch := make(chan result, 1)
	first := func(args []js.Value) js.Value {
		if len(args) == 0 {
			return js.Undefined()
		}
		return args[0]
	}
	onOK := js.FuncOf(func(_ js.Value, args []js.Value) any {
		ch <- result{v: first(args)}
		return nil
	})
	defer onOK.Release()
	onErr := js.FuncOf(func(_ js.Value, args []js.Value) any {
		ch <- result{err: ErrorOf(first(args))}
		return nil
	})
	defer onErr.Release()
	if _, err := Call(p, "then", onOK, onErr); err != nil {
		return js.Value{}, err
	}
	r := <-ch
	return r.v, r.err
}
