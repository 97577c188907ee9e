//go:build !js

package host

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	lphost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ws "github.com/libp2p/go-libp2p/p2p/transport/websocket"
	ma "github.com/multiformats/go-multiaddr"
)

// New starts a native host: TCP, QUIC v1 and WebSocket transports, noise,
// yamux, a resource manager sized for federation, identify and ping, the
// circuit relay v2 client (so we can dial /p2p-circuit addresses) and, as
// configured, the relay service, mDNS and the DHT. NAT port mapping and
// AutoNAT stay off: Hearth works offline on a LAN first. ctx bounds the
// start only; Close stops the host.
func New(ctx context.Context, opts Options) (*Host, error) {
	if opts.Identity == nil {
		return nil, errors.New("p2p: no identity")
	}
	prefix := opts.ProtocolPrefix
	if prefix == "" {
		prefix = DefaultProtocolPrefix
	}
	limits := opts.Relay.withDefaults()
	rm, err := newResourceManager(limits)
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	listen := libp2p.NoListenAddrs
	if len(opts.Listen) > 0 {
		listen = libp2p.ListenAddrs(opts.Listen...)
	}
	h, err := libp2p.New(
		libp2p.Identity(opts.Identity.LibP2PKey()),
		listen,
		// No SO_REUSEPORT: dialling from the listen port lets two nodes that
		// find each other at the same moment (mDNS) open one TCP connection
		// from both ends, where both act as noise initiator and the
		// handshake fails. Reuseport serves hole punching, which we don't do.
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.Transport(quic.NewTransport),
		libp2p.Transport(ws.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.EnableRelay(),
		libp2p.UserAgent(UserAgent),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		_ = rm.Close()
		return nil, fmt.Errorf("p2p: starting libp2p: %w", err)
	}
	var closers []func() error
	fail := func(err error) (*Host, error) {
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
		_ = h.Close()
		return nil, err
	}
	if opts.RelayService {
		r, err := newRelayService(h, limits)
		if err != nil {
			return fail(fmt.Errorf("p2p: relay service: %w", err))
		}
		closers = append(closers, r.Close)
	}
	var rt routing.PeerRouting
	if opts.DHT {
		// The DHT lives as long as the host, not as long as ctx.
		d, err := newDHT(context.WithoutCancel(ctx), h, prefix, opts.Bootstrap, len(opts.Listen) > 0)
		if err != nil {
			return fail(fmt.Errorf("p2p: DHT: %w", err))
		}
		closers = append(closers, d.Close)
		rt = d
	}
	n, err := assemble(opts, h, rt, closers)
	if err != nil {
		return nil, err // assemble closed h and closers
	}
	if opts.MDNS {
		// Started last: a peer found right away is connected to at once,
		// and everything that serves it must be in place.
		m := mdns.NewMdnsService(h, MDNSService, &mdnsNotifee{n: n})
		if err := m.Start(); err != nil {
			n.Close()
			return nil, fmt.Errorf("p2p: mDNS: %w", err)
		}
		n.closers = append(n.closers, m.Close)
	}
	return n, nil
}

// newRelayService constructs the circuit relay v2 service directly:
// libp2p.EnableRelayService only starts it once AutoNAT calls the node
// publicly reachable, which never happens offline or on a LAN.
func newRelayService(h lphost.Host, l RelayLimits) (*relay.Relay, error) {
	rc := relay.DefaultResources()
	rc.ReservationTTL = l.ReservationTTL
	rc.MaxReservations = l.MaxReservations
	rc.MaxReservationsPerIP = l.MaxReservationsPerIP
	rc.MaxReservationsPerASN = l.MaxReservations
	rc.MaxCircuits = l.MaxCircuits
	// Larger copy buffers: the default 2 KiB makes bulk transfers (backfill)
	// syscall-bound.
	rc.BufferSize = 32 << 10
	rc.Limit = &relay.RelayLimit{Data: l.CircuitData, Duration: l.CircuitDuration}
	if l.Unlimited {
		rc.Limit = nil
	}
	return relay.New(h,
		relay.WithResources(rc),
		// The default filter hands out public addresses only; on a LAN or
		// loopback the private ones are the only ones there are. Relayed
		// addresses are useless to a reserving peer and are dropped.
		relay.WithReservationAddressFilter(func(a ma.Multiaddr) bool { return !isCircuit(a) }),
	)
}

// newDHT runs Kademlia under our own protocol prefix ("/hearth/kad/1.0.0"),
// in server mode when the node listens (a node nobody can dial would only
// be a dead entry in others' routing tables). Only peer routing is used:
// values and provider records are off, so the DHT stores nothing for
// strangers.
func newDHT(ctx context.Context, h lphost.Host, prefix string, bootstrap []ma.Multiaddr, listens bool) (*dht.IpfsDHT, error) {
	infos, err := addrInfos(bootstrap)
	if err != nil {
		return nil, err
	}
	mode := dht.ModeClient
	if listens {
		mode = dht.ModeServer
	}
	d, err := dht.New(ctx, h,
		dht.Mode(mode),
		dht.ProtocolPrefix(protocol.ID(prefix)),
		dht.DisableProviders(),
		dht.DisableValues(),
		dht.BootstrapPeers(infos...),
	)
	if err != nil {
		return nil, err
	}
	if err := d.Bootstrap(ctx); err != nil {
		_ = d.Close()
		return nil, err
	}
	return d, nil
}

// withDefaults fills the limits left zero (only a native node relays).
func (l RelayLimits) withDefaults() RelayLimits {
	d := DefaultRelayLimits()
	orDefault(&l.CircuitData, d.CircuitData)
	orDefault(&l.CircuitDuration, d.CircuitDuration)
	orDefault(&l.MaxReservations, d.MaxReservations)
	orDefault(&l.MaxReservationsPerIP, d.MaxReservationsPerIP)
	orDefault(&l.MaxCircuits, d.MaxCircuits)
	orDefault(&l.ReservationTTL, d.ReservationTTL)
	return l
}

// orDefault sets *v to d when it is not positive.
func orDefault[T int | int64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}
