//go:build js

package host

import (
	"context"
	"errors"
	"fmt"

	"hearth/p2p/wsjs"
)

// New starts a browser host: go-libp2p assembled by hand (libp2p.New does
// not build for js) over a WebSocket transport that dials with the
// browser's WebSocket, with noise, yamux, identify, ping and the circuit
// relay v2 client (see wsjs.NewHost). A browser cannot listen, so Listen,
// RelayService, MDNS and DHT must be unset: the node keeps connections to
// opts.Bootstrap, holds reservations with opts.Relays (publishing its
// signed peer record with its /p2p-circuit addresses to them) and finds
// other peers by asking the peers it is connected to for their records.
// Everything after the construction is the platform-independent code of
// this package, the same as natively.
//
// Call it from a goroutine, never from inside a js.FuncOf callback: dials
// wait on the browser's event loop.
func New(ctx context.Context, opts Options) (*Host, error) {
	if opts.Identity == nil {
		return nil, errors.New("p2p: no identity")
	}
	switch {
	case len(opts.Listen) > 0:
		return nil, errors.New("p2p: a browser host cannot listen (reach it through relays)")
	case opts.RelayService:
		return nil, errors.New("p2p: a browser host cannot offer a relay service")
	case opts.MDNS:
		return nil, errors.New("p2p: mDNS is not available in the browser")
	case opts.DHT:
		return nil, errors.New("p2p: the browser host runs no DHT (peers are found through relays' records)")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := wsjs.NewHost(wsjs.HostOptions{Key: opts.Identity.LibP2PKey(), UserAgent: UserAgent})
	if err != nil {
		return nil, fmt.Errorf("p2p: starting the browser host: %w", err)
	}
	return assemble(opts, h, nil, nil)
}
