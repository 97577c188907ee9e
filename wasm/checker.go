//go:build js

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall/js"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/roomserver"
	"hearth/p2p/identity"
	"hearth/wasm/jscall"
)

// Go in wasm runs on one thread, and checking events from other servers
// (parsing, hashing, signatures, event IDs) is most of what a backfill or
// a join costs: so the node worker keeps a pool of check workers, each
// running this program with HEARTH_ROLE=checker (web/app/check-worker.js),
// and hands them large batches (roomserver.Checker). The node worker
// meanwhile stores what was checked before.
//
// Across the threads, a batch is check(version, [Uint8Array]) and its
// answer one array per event: [refused, eventID, json (Uint8Array),
// redacted].

// poolChecker is roomserver.Checker over the pool the node worker's
// script keeps as self.hearthChecks: check(version, events) resolves to
// the answers, or to null while no worker is up yet (the pool starts on
// first use; the roomserver checks those events itself meanwhile).
type poolChecker struct {
	pool                      js.Value
	batches, events, declined atomic.Int64
}

// checkStats is what the check workers did, for /_hearth/v1/status.
type checkStats struct {
	Batches int64 `json:"batches"` // checked by the workers
	Events  int64 `json:"events"`
	// Declined batches were checked by the node itself: no worker was up
	// yet, or it failed.
	Declined int64 `json:"declined"`
}

// newPoolChecker returns the pool's Checker, or nil when the script keeps
// no pool.
func newPoolChecker() *poolChecker {
	pool := js.Global().Get("hearthChecks")
	if pool.Type() != js.TypeObject {
		return nil
	}
	return &poolChecker{pool: pool}
}

func (c *poolChecker) stats() checkStats {
	if c == nil {
		return checkStats{}
	}
	return checkStats{Batches: c.batches.Load(), Events: c.events.Load(), Declined: c.declined.Load()}
}

func (c *poolChecker) Check(ctx context.Context, version gomatrixserverlib.RoomVersion, events [][]byte) ([]roomserver.Checked, error) {
	out, err := c.check(ctx, version, events)
	if err != nil {
		c.declined.Add(1)
		return nil, err
	}
	c.batches.Add(1)
	c.events.Add(int64(len(events)))
	return out, nil
}

var errNoChecker = errors.New("no check worker is up yet")

func (c *poolChecker) check(_ context.Context, version gomatrixserverlib.RoomVersion, events [][]byte) ([]roomserver.Checked, error) {
	arr := js.Global().Get("Array").New(len(events))
	for i, ev := range events {
		arr.SetIndex(i, bytesToJS(ev))
	}
	p, err := jscall.Call(c.pool, "check", string(version), arr)
	if err != nil {
		return nil, err
	}
	res, err := jscall.Await(p)
	if err != nil {
		return nil, err
	}
	if res.IsNull() {
		return nil, errNoChecker
	}
	if res.Type() != js.TypeObject || res.Length() != len(events) {
		return nil, fmt.Errorf("check workers answered %v for %d events", res.Type(), len(events))
	}
	out := make([]roomserver.Checked, len(events))
	for i := range out {
		a := res.Index(i)
		out[i] = roomserver.Checked{Refused: a.Index(0).String(), EventID: a.Index(1).String(), Redacted: a.Index(3).Bool()}
		if body := a.Index(2); body.Type() == js.TypeObject {
			out[i].JSON = make([]byte, body.Length())
			js.CopyBytesToGo(out[i].JSON, body)
		}
	}
	return out, nil
}

// serveChecks makes this program a check worker: it registers
// self.hearthChecker with check(version, events) → Promise of the
// answers, and waits for calls.
func serveChecks(log *slog.Logger) {
	verifier, width := newVerifier(identity.KeyID, identity.PublicKeyOf, log)
	if width == 0 {
		width = 1 // Go's own verifier computes on this one thread
	}
	api := js.Global().Get("Object").New()
	api.Set("check", js.FuncOf(func(_ js.Value, args []js.Value) any {
		if len(args) < 2 || args[0].Type() != js.TypeString || args[1].Type() != js.TypeObject {
			return rejected(errors.New("check(version, events): bad arguments"))
		}
		version := gomatrixserverlib.RoomVersion(args[0].String())
		events := make([][]byte, args[1].Length())
		for i := range events {
			v := args[1].Index(i)
			events[i] = make([]byte, v.Length())
			js.CopyBytesToGo(events[i], v)
		}
		return promiseValue(func() (js.Value, error) {
			checked := roomserver.CheckEvents(context.Background(), version, events, verifier, width)
			out := js.Global().Get("Array").New(len(checked))
			for i, c := range checked {
				var body any
				if c.JSON != nil {
					body = bytesToJS(c.JSON)
				}
				out.SetIndex(i, []any{c.Refused, c.EventID, body, c.Redacted})
			}
			return out, nil
		})
	}))
	js.Global().Set("hearthChecker", api)
	log.Info("hearth check worker loaded", "verify_width", width)
	if f := js.Global().Get("hearthLoaded"); f.Type() == js.TypeFunction {
		f.Invoke()
	}
	select {}
}

// uint8Array is the Uint8Array constructor, looked up once.
var uint8Array = js.Global().Get("Uint8Array")

// bytesToJS copies b into a new Uint8Array.
func bytesToJS(b []byte) js.Value {
	a := uint8Array.New(len(b))
	js.CopyBytesToJS(a, b)
	return a
}
