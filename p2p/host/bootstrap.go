package host

import (
	"context"
	"math/rand/v2"
	"time"

	lphost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

const (
	connectTimeout = 10 * time.Second
	// pollInterval is how often a kept connection is checked. Polling, not
	// the event bus: a subscriber that stops draining (while it dials)
	// would stall the swarm's notifications.
	pollInterval = time.Second
)

// backoff doubles from 500 ms to 30 s, with ±20% jitter so nodes started
// together do not retry in lockstep.
type backoff struct{ d time.Duration }

func (b *backoff) next() time.Duration {
	switch {
	case b.d == 0:
		b.d = 500 * time.Millisecond
	case b.d < 30*time.Second:
		b.d = min(2*b.d, 30*time.Second)
	}
	return time.Duration(float64(b.d) * (0.8 + 0.4*rand.Float64()))
}

func (b *backoff) reset() { b.d = 0 }

// sleep waits d or until the host closes; false means closing.
func (n *Host) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-n.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// connect dials ai, clearing the swarm's dial backoff first: our loops
// have their own, and a peer that restarted a second ago should be reached
// now, not after the swarm's minutes-long per-address backoff.
func connect(ctx context.Context, h lphost.Host, ai peer.AddrInfo) error {
	if sw, ok := h.Network().(interface{ Backoff() *swarm.DialBackoff }); ok {
		sw.Backoff().Clear(ai.ID)
	}
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	return h.Connect(network.WithAllowLimitedConn(ctx, "hearth bootstrap"), ai)
}

func connected(h lphost.Host, p peer.ID) bool {
	c := h.Network().Connectedness(p)
	return c == network.Connected || c == network.Limited
}

// goKeepConnected keeps a connection to a bootstrap peer, redialling with
// backoff whenever it drops.
func (n *Host) goKeepConnected(ai peer.AddrInfo) {
	n.h.ConnManager().Protect(ai.ID, "hearth-bootstrap")
	n.spawn(func() {
		var b backoff
		for n.ctx.Err() == nil {
			if connected(n.h, ai.ID) {
				if !n.sleep(pollInterval) {
					return
				}
				continue
			}
			if err := connect(n.ctx, n.h, ai); err != nil {
				wait := b.next()
				n.log.Debug("bootstrap peer unreachable", "peer", ai.ID, "retry_in", wait, "err", err)
				if !n.sleep(wait) {
					return
				}
				continue
			}
			b.reset()
			n.log.Info("connected to bootstrap peer", "peer", ai.ID)
		}
	})
}
