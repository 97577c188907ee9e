//go:build js

// Command probe is a test program for the browser platform pieces, run in
// a dedicated worker by web/test/browser-probe.test.mjs: SQLite on OPFS
// (wasm/opfs) through node/storage, its insert rates, VerifyJSON and
// ed25519 rates, and the browser libp2p host (p2p/host over p2p/wsjs)
// reaching a native relay and other browsers by server name.
//
// It registers one global, hearthProbe, whose methods take a JSON string
// and return a Promise of a JSON string; the worker glue
// (web/test/browser-probe/worker.js) takes the Web Lock first and relays
// calls from the page. It is a test tool; nothing imports it.
package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"syscall/js"
)

// op is one probe operation: it gets its JSON arguments and returns a
// JSON-able result. It runs on its own goroutine (never on the JS
// callback), so it may block on the browser.
type op func(args json.RawMessage) (any, error)

var logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

func main() {
	ops := map[string]op{
		"storageOpen":  storageOpen,
		"storageWrite": storageWrite,
		"storageBurst": storageBurst,
		"storageSpam":  storageSpam,
		"storageCheck": storageCheck,
		"storageClose": storageClose,
		"verifyBench":  verifyBench,
		"p2pStart":     p2pStart,
		"p2pGet":       p2pGet,
		"p2pPeers":     p2pPeers,
	}
	api := js.Global().Get("Object").New()
	for name, fn := range ops {
		api.Set(name, js.FuncOf(func(_ js.Value, args []js.Value) any {
			raw := "{}"
			if len(args) > 0 && args[0].Type() == js.TypeString {
				raw = args[0].String()
			}
			return promise(func() (any, error) { return fn(json.RawMessage(raw)) })
		}))
	}
	js.Global().Set("hearthProbe", api)
	logger.Info("probe ready")
	select {} // serve calls until the worker is terminated
}

// promise runs f on a goroutine and settles a JS Promise with its JSON
// result (a string) or its error.
func promise(f func() (any, error)) js.Value {
	executor := js.FuncOf(func(_ js.Value, args []js.Value) any {
		resolve, reject := args[0], args[1]
		go func() {
			res, err := f()
			var out []byte
			if err == nil {
				out, err = json.Marshal(res)
			}
			if err != nil {
				reject.Invoke(js.Global().Get("Error").New(err.Error()))
				return
			}
			resolve.Invoke(string(out))
		}()
		return nil
	})
	defer executor.Release() // the Promise constructor calls it synchronously
	return js.Global().Get("Promise").New(executor)
}

func decode(raw json.RawMessage, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("bad arguments: %w", err)
	}
	return nil
}
