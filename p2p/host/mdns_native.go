//go:build !js

package host

import "github.com/libp2p/go-libp2p/core/peer"

const mdnsAttempts = 5

// mdnsNotifee connects to Hearth nodes found on the LAN.
type mdnsNotifee struct{ n *Host }

func (m *mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	n := m.n
	if ai.ID == n.h.ID() || connected(n.h, ai.ID) || n.ctx.Err() != nil {
		return
	}
	// Dial in a goroutine Close waits for, so none outlives the host.
	n.spawn(func() {
		// mDNS reports a peer once per record lifetime, so a failed dial
		// would leave it unknown for long: retry a few times.
		var b backoff
		for attempt := 1; ; attempt++ {
			err := connect(n.ctx, n.h, ai)
			if err == nil {
				n.log.Info("connected to LAN peer (mDNS)", "peer", ai.ID)
				return
			}
			if attempt == mdnsAttempts || connected(n.h, ai.ID) {
				n.log.Debug("mDNS peer unreachable", "peer", ai.ID, "err", err)
				return
			}
			if !n.sleep(b.next()) {
				return
			}
		}
	})
}
