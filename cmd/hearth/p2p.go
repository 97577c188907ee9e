package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"

	"hearth/p2p/fedhttp"
	"hearth/p2p/host"
	"hearth/p2p/identity"
)

// startP2P starts the node's libp2p host from the command line.
func startP2P(ctx context.Context, id *identity.Identity, o *options, log *slog.Logger) (*host.Host, error) {
	listen, err := multiaddrs(o.P2P)
	if err != nil {
		return nil, err
	}
	boot, err := multiaddrs(o.Bootstrap)
	if err != nil {
		return nil, err
	}
	relays, err := multiaddrs(o.Relays)
	if err != nil {
		return nil, err
	}
	return host.New(ctx, host.Options{
		Identity:     id,
		Listen:       listen,
		Bootstrap:    boot,
		Relays:       relays,
		MDNS:         !o.NoMDNS,
		DHT:          !o.NoDHT,
		RelayService: !o.NoRelayService,
		Relay:        o.Relay,
		Logger:       log,
	})
}

func multiaddrs(ss []string) ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, len(ss))
	for i, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("multiaddr %q: %w", s, err)
		}
		out[i] = a
	}
	return out, nil
}

// status reports the node and its libp2p peers.
func status(h *host.Host) Status {
	st := Status{ServerName: h.ServerName(), PeerID: h.ID().String(), Addrs: strs(h.Addrs())}
	for _, p := range h.Peers() {
		st.Peers = append(st.Peers, PeerInfo{PeerID: p.PeerID.String(), ServerName: p.ServerName, Addrs: strs(p.Addrs)})
	}
	return st
}

func strs(as []ma.Multiaddr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// onConnect calls f with the server name of every peer that connects, so
// queued federation traffic for it goes at once.
func onConnect(h *host.Host, f func(serverName string)) {
	h.LibP2P().Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			go f(fedhttp.ServerNameOf(c.RemotePeer()))
		},
	})
}

// remotePeer names the server a federation request's libp2p stream is
// authenticated as.
func remotePeer(r *http.Request) (string, bool) {
	name := fedhttp.RemoteServerName(r)
	return name, name != ""
}

// fromLoopback accepts requests from this machine only (registration).
func fromLoopback(r *http.Request) bool { return isLoopback(r.RemoteAddr) }
