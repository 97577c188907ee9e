//go:build js

package host

import (
	"context"
	"errors"
)

// New is not built for the browser yet: there the host is assembled by
// hand (basichost, swarm, noise, yamux, the circuit relay client) over a
// coder/websocket transport, since libp2p.New does not build for js. The
// untagged parts of this package (bootstrap, reservations, records,
// federation HTTP, peers) are meant to be reused as they are.
func New(ctx context.Context, opts Options) (*Host, error) {
	return nil, errors.New("p2p: the browser host is not built yet")
}
