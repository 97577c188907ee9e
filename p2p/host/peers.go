package host

import (
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"hearth/p2p/fedhttp"
)

// PeerInfo is a connected peer as the status endpoint shows it. ServerName
// is "" for a peer that cannot be a Hearth server (a key other than
// ed25519). Addrs are the remote addresses of our connections to it; a
// relayed one contains /p2p-circuit.
type PeerInfo struct {
	PeerID     peer.ID        `json:"peer_id"`
	ServerName string         `json:"server_name"`
	Addrs      []ma.Multiaddr `json:"addrs"`
}

// Peers lists the peers the host is connected to, sorted by server name
// then peer ID.
func (n *Host) Peers() []PeerInfo {
	var out []PeerInfo
	for _, p := range n.h.Network().Peers() {
		info := PeerInfo{PeerID: p, ServerName: fedhttp.ServerNameOf(p), Addrs: []ma.Multiaddr{}}
		for _, c := range n.h.Network().ConnsToPeer(p) {
			info.Addrs = append(info.Addrs, c.RemoteMultiaddr())
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b PeerInfo) int {
		if c := strings.Compare(a.ServerName, b.ServerName); c != 0 {
			return c
		}
		return strings.Compare(string(a.PeerID), string(b.PeerID))
	})
	return out
}

// Addrs are the addresses others can reach this node at, each ending in
// /p2p/<our peer ID>: the listen addresses the host announces and the
// /p2p-circuit addresses of our relay reservations.
func (n *Host) Addrs() []ma.Multiaddr {
	self, err := ma.NewComponent("p2p", n.h.ID().String())
	if err != nil {
		return nil // our own ID always encodes
	}
	var out []ma.Multiaddr
	for _, a := range n.announceAddrs() {
		out = append(out, a.Encapsulate(self))
	}
	return out
}

// announceAddrs are our addresses without the /p2p/<id> suffix, as they go
// into our signed peer record.
func (n *Host) announceAddrs() []ma.Multiaddr {
	addrs := slices.Clone(n.h.Addrs())
	n.mu.Lock()
	for _, cs := range n.circuits {
		addrs = append(addrs, cs...)
	}
	n.mu.Unlock()
	return ma.Unique(addrs)
}
