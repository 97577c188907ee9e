package host

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"

	"hearth/p2p/peerrecord"
)

// goKeepReservation holds a circuit relay v2 reservation with a relay,
// refreshing it before it expires and redialling when the relay drops, and
// publishes our signed peer record (with the /p2p-circuit addresses) to
// every relay we hold a reservation with. Reservations are managed here
// rather than by go-libp2p's autorelay, which waits for AutoNAT to call us
// private (never, offline) and which the browser host cannot run.
func (n *Host) goKeepReservation(ai peer.AddrInfo) {
	n.h.ConnManager().Protect(ai.ID, "hearth-relay")
	n.spawn(func() {
		defer n.setCircuits(ai.ID, nil)
		var b backoff
		for n.ctx.Err() == nil {
			rsv, err := n.reserve(ai)
			if err != nil {
				n.setCircuits(ai.ID, nil)
				wait := b.next()
				n.log.Debug("relay reservation failed", "relay", ai.ID, "retry_in", wait, "err", err)
				if !n.sleep(wait) {
					return
				}
				continue
			}
			b.reset()
			n.setCircuits(ai.ID, n.circuitAddrs(ai.ID, rsv))
			n.log.Info("relay reservation held", "relay", ai.ID, "expires", rsv.Expiration, "limit_data", rsv.LimitData, "limit_duration", rsv.LimitDuration)
			n.publishRecord()
			// Refresh at three quarters of the reservation's life, or at
			// once when the relay connection drops (the reservation goes
			// with it).
			refresh := time.Now().Add(max(time.Until(rsv.Expiration)*3/4, 5*time.Second))
			for n.ctx.Err() == nil && time.Now().Before(refresh) && connected(n.h, ai.ID) {
				if !n.sleep(pollInterval) {
					return
				}
			}
		}
	})
}

func (n *Host) reserve(ai peer.AddrInfo) (*client.Reservation, error) {
	if err := connect(n.ctx, n.h, ai); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(n.ctx, connectTimeout)
	defer cancel()
	return client.Reserve(ctx, n.h, ai)
}

// circuitAddrs are the addresses others reach us at through relay: the
// relay's addresses from the reservation, plus the ones we reach it at
// (the relay may have filtered its own list), each + /p2p-circuit.
func (n *Host) circuitAddrs(relay peer.ID, rsv *client.Reservation) []ma.Multiaddr {
	relayComp, err := ma.NewComponent("p2p", relay.String())
	if err != nil {
		return nil
	}
	circuit, err := ma.NewComponent("p2p-circuit", "")
	if err != nil {
		return nil
	}
	var out []ma.Multiaddr
	add := func(a ma.Multiaddr) {
		if isCircuit(a) {
			return // a relay reached through a relay cannot relay for us
		}
		if id, _ := peer.IDFromP2PAddr(a); id != relay {
			a = a.Encapsulate(relayComp)
		}
		out = append(out, a.Encapsulate(circuit))
	}
	for _, a := range rsv.Addrs {
		add(a)
	}
	for _, c := range n.h.Network().ConnsToPeer(relay) {
		add(c.RemoteMultiaddr())
	}
	return ma.Unique(out)
}

func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

func (n *Host) setCircuits(relay peer.ID, addrs []ma.Multiaddr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(addrs) == 0 {
		delete(n.circuits, relay)
		return
	}
	n.circuits[relay] = addrs
}

// publishRecord signs our current addresses and hands the record to every
// relay we hold a reservation with.
func (n *Host) publishRecord() {
	n.mu.Lock()
	var relays []peer.ID
	for r := range n.circuits {
		relays = append(relays, r)
	}
	n.mu.Unlock()
	raw, err := peerrecord.Seal(peer.AddrInfo{ID: n.h.ID(), Addrs: n.announceAddrs()}, n.h.Peerstore().PrivKey(n.h.ID()))
	if err != nil {
		n.log.Warn("cannot sign our peer record", "err", err)
		return
	}
	for _, r := range relays {
		if err := peerrecord.Publish(n.ctx, n.h, n.recProt, r, raw); err != nil {
			n.log.Debug("publishing our peer record failed", "relay", r, "err", err)
		}
	}
}
