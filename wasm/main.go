//go:build js

// Command wasm is the GOOS=js GOARCH=wasm entry point of the browser node.
//
// In a browser dedicated worker (web/app/node-worker.js, which holds the
// Web Lock "hearth-node" before it loads this program) it registers the
// global hearthNode, calls the global hearthLoaded() if there is one, and
// answers through these methods, each returning a Promise:
//
//	start(json)  -> json  take the node's identity and answer with its
//	                      status as soon as /_hearth/v1/status and
//	                      /_matrix/client/versions answer; storage (OPFS,
//	                      or memdb when OPFS is missing), the node and then
//	                      libp2p start on in the background;
//	                      json is {"seed": hex ed25519 seed,
//	                      "bootstrap": [multiaddr], "relays": [multiaddr]}
//	ready()      -> json  the status once the node serves the whole client
//	                      API (storage is open); rejects if it failed
//	requests([[method, url, headers, body], ...], reply)
//	                      HTTP requests through the node's client API;
//	                      headers are "name: value" lines (a request's
//	                      may also be [[name, value]]), body a Uint8Array
//	                      or null. They run concurrently in Go
//	                      before control returns to the browser, so their
//	                      writes share commits (see requests); each answer
//	                      is reply(i, {status, headers, body}) the moment
//	                      it is ready
//	status()     -> json  as /_hearth/v1/status (see Status)
//
// Outside a worker (under Node, as `make test-wasm` runs it) it runs the
// smoke test in smoke.go instead.
//
// It imports node, p2p and wasm/opfs; nothing imports it.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"syscall/js"

	_ "github.com/ncruces/go-sqlite3/vfs/memdb" // the fallback VFS (and the smoke run's)
)

func main() {
	if js.Global().Get("WorkerGlobalScope").IsUndefined() {
		if err := smoke(); err != nil {
			fmt.Fprintln(os.Stderr, "hearth wasm:", err)
			os.Exit(1)
		}
		return
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if os.Getenv("HEARTH_ROLE") == "checker" {
		serveChecks(logger) // a check worker of the node's (see checker.go)
		return
	}
	b := newBrowserNode(logger)
	api := js.Global().Get("Object").New()
	api.Set("start", js.FuncOf(func(_ js.Value, args []js.Value) any {
		raw := argString(args, 0)
		return promise(func() (any, error) { return b.start([]byte(raw)) })
	}))
	api.Set("ready", js.FuncOf(func(_ js.Value, _ []js.Value) any {
		return promise(b.waitReady)
	}))
	api.Set("status", js.FuncOf(func(_ js.Value, _ []js.Value) any {
		return promise(b.status)
	}))
	api.Set("requests", js.FuncOf(func(_ js.Value, args []js.Value) any {
		return b.requests(args)
	}))
	js.Global().Set("hearthNode", api)
	logger.Info("hearth wasm loaded")
	if f := js.Global().Get("hearthLoaded"); f.Type() == js.TypeFunction {
		f.Invoke()
	}
	select {} // serve calls until the worker is terminated
}

// requests starts serving a batch of requests; each answer goes to
// reply(i, answer) (or reply(i, null, message) if the request was not
// understood). It returns an error message if it was called wrongly.
//
// Go under js/wasm runs every runnable goroutine before it returns to the
// browser, so a request handed over alone is served to its end (commit
// included) before the browser even delivers the next one, and no two
// sends ever share a commit. Handed over together, their goroutines are
// all runnable at once: the room workers and the storage writer see them
// together and batch them.
//
// For the same reason answers are not Promises: a Promise's callbacks
// run only once Go has nothing left to run, so an answer would wait for
// whatever the answer set off (the federation fan-out, other clients'
// /sync, the commit of a received transaction's record) — tens of ms in
// a busy node. reply is called as soon as the answer is ready, and posts
// it at once.
func (b *browserNode) requests(args []js.Value) any {
	if len(args) < 2 || args[0].Type() != js.TypeObject || args[1].Type() != js.TypeFunction {
		return "requests(list, reply): a list of requests and a function"
	}
	list, reply := args[0], args[1]
	for i := range list.Length() {
		item := list.Index(i)
		parts := make([]js.Value, item.Length())
		for j := range parts {
			parts[j] = item.Index(j)
		}
		req, err := requestFromJS(parts)
		if err != nil {
			reply.Invoke(i, js.Null(), err.Error())
			continue
		}
		go func() { reply.Invoke(i, b.serve(req)) }()
	}
	return nil
}

func argString(args []js.Value, i int) string {
	if len(args) > i && args[i].Type() == js.TypeString {
		return args[i].String()
	}
	return "{}"
}
