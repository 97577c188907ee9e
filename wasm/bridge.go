//go:build js

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall/js"
)

// promise runs f on a goroutine and settles a JS Promise with its result
// as a JSON string, or rejects it with its error. Functions exported to JS
// must not block the event loop: f may wait on the browser (OPFS, sockets,
// a /sync long poll), so it never runs on the callback itself.
func promise(f func() (any, error)) js.Value {
	return promiseValue(func() (js.Value, error) {
		res, err := f()
		if err != nil {
			return js.Undefined(), err
		}
		out, err := json.Marshal(res)
		if err != nil {
			return js.Undefined(), fmt.Errorf("encode result: %w", err)
		}
		return js.ValueOf(string(out)), nil
	})
}

// promiseValue is promise for a result already made of JS values.
//
// The Promise comes from Promise.withResolvers, not from a constructor
// with an executor written in Go: a call from JS into Go (the executor)
// runs every runnable goroutine to a standstill before it returns, so f's
// goroutine would run to its end inside the constructor, and calls made
// together (a check worker's batches) would run one after the other
// instead of side by side.
func promiseValue(f func() (js.Value, error)) js.Value {
	settle := func(resolve, reject js.Value) {
		go func() {
			v, err := f()
			if err != nil {
				reject.Invoke(js.Global().Get("Error").New(err.Error()))
				return
			}
			resolve.Invoke(v)
		}()
	}
	ctor := js.Global().Get("Promise")
	if ctor.Get("withResolvers").Type() == js.TypeFunction {
		r := ctor.Call("withResolvers")
		settle(r.Get("resolve"), r.Get("reject"))
		return r.Get("promise")
	}
	executor := js.FuncOf(func(_ js.Value, args []js.Value) any {
		settle(args[0], args[1])
		return nil
	})
	defer executor.Release() // the Promise constructor calls it synchronously
	return ctor.New(executor)
}

func rejected(err error) js.Value {
	return js.Global().Get("Promise").Call("reject", js.Global().Get("Error").New(err.Error()))
}

// requestFromJS builds the http.Request of request(method, url, headers,
// body): headers one string of "name: value" lines (or an array of [name,
// value] pairs), body a Uint8Array or null. The URL may be absolute (the
// page's origin) or a path. Headers travel as one string because every
// value taken from JS is a call across the boundary: a request's dozen
// headers as pairs cost more than parsing it.
func requestFromJS(args []js.Value) (*http.Request, error) {
	if len(args) < 2 || args[0].Type() != js.TypeString || args[1].Type() != js.TypeString {
		return nil, fmt.Errorf("request(method, url, headers, body): method and url must be strings")
	}
	var body []byte
	if len(args) > 3 && args[3].Truthy() {
		body = make([]byte, args[3].Get("length").Int())
		js.CopyBytesToGo(body, args[3])
	}
	req, err := http.NewRequest(args[0].String(), args[1].String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	req.RequestURI = req.URL.RequestURI()
	// The page is this node's own local client (registration and the
	// status are for it), as a loopback client is for a native node.
	req.RemoteAddr = "127.0.0.1:1"
	if len(args) > 2 {
		switch hs := args[2]; hs.Type() {
		case js.TypeString:
			for line := range strings.SplitSeq(hs.String(), "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok {
					req.Header.Add(k, strings.TrimSpace(v))
				}
			}
		case js.TypeObject:
			for i := range hs.Length() {
				kv := hs.Index(i)
				req.Header.Add(kv.Index(0).String(), kv.Index(1).String())
			}
		}
	}
	return req, nil
}

// responseToJS turns a recorded answer into {status, headers, body}:
// headers one string of "name: value" lines, body a Uint8Array.
func responseToJS(rec *httptest.ResponseRecorder) js.Value {
	out := js.Global().Get("Object").New()
	out.Set("status", rec.Code)
	var hs strings.Builder
	for k, vs := range rec.Header() {
		for _, v := range vs {
			hs.WriteString(k)
			hs.WriteString(": ")
			hs.WriteString(v)
			hs.WriteByte('\n')
		}
	}
	out.Set("headers", hs.String())
	out.Set("body", bytesToJS(rec.Body.Bytes()))
	return out
}
