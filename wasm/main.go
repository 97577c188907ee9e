//go:build js

// Command wasm is the GOOS=js GOARCH=wasm entry point of the browser node.
//
// In a browser dedicated worker (web/app/node-worker.js, which holds the
// Web Lock "hearth-node" before it loads this program) it registers the
// global hearthNode with three methods, each returning a Promise:
//
//	start(json)  -> json  open storage (OPFS, or memdb when OPFS is
//	                      missing), start the libp2p host and the node;
//	                      json is {"seed": hex ed25519 seed,
//	                      "bootstrap": [multiaddr], "relays": [multiaddr]}
//	request(method, url, headers, body) -> {status, headers, body}
//	                      one HTTP request through the node's client API;
//	                      headers are [[name, value]], body a Uint8Array
//	status()     -> json  {server_name, peer_id, addrs, peers, persistent}
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
	b := &browserNode{log: logger}
	api := js.Global().Get("Object").New()
	api.Set("start", js.FuncOf(func(_ js.Value, args []js.Value) any {
		raw := argString(args, 0)
		return promise(func() (any, error) { return b.start([]byte(raw)) })
	}))
	api.Set("status", js.FuncOf(func(_ js.Value, _ []js.Value) any {
		return promise(func() (any, error) { return b.status() })
	}))
	api.Set("request", js.FuncOf(func(_ js.Value, args []js.Value) any {
		req, err := requestFromJS(args)
		if err != nil {
			return rejected(err)
		}
		return promiseValue(func() (js.Value, error) { return b.serve(req) })
	}))
	js.Global().Set("hearthNode", api)
	logger.Info("hearth wasm loaded")
	select {} // serve calls until the worker is terminated
}

func argString(args []js.Value, i int) string {
	if len(args) > i && args[i].Type() == js.TypeString {
		return args[i].String()
	}
	return "{}"
}
