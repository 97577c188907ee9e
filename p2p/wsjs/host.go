package wsjs

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	lphost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/p2p/host/basic"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	ma "github.com/multiformats/go-multiaddr"
)

// HostOptions configure NewHost. Key is required.
type HostOptions struct {
	Key crypto.PrivKey
	// UserAgent is what identify tells peers we run.
	UserAgent string
	// ResourceManager bounds connections, streams and memory; nil takes
	// DefaultResourceManager. The host closes it.
	ResourceManager network.ResourceManager
}

// Connection manager watermarks: a browser node holds its relays and
// bootstrap peers (protected) and the peers it federates with, directly
// or through relays. Past High, the least useful connections are trimmed
// down to Low.
const (
	connLow   = 64
	connHigh  = 128
	connGrace = time.Minute
)

// NewHost assembles a go-libp2p host that dials only, over Transport, with
// what libp2p.New would give it: noise, yamux, a peerstore, identify and
// ping (basichost), a connection manager, a resource manager and the
// circuit relay v2 client, so it can dial /p2p-circuit addresses and
// accept connections relayed to it once it holds a reservation (see
// client.Reserve). It listens on nothing else and runs no AutoNAT, hole
// punching, relay service or metrics.
func NewHost(opts HostOptions) (lphost.Host, error) {
	if opts.Key == nil {
		return nil, errors.New("wsjs: no key")
	}
	id, err := peer.IDFromPrivateKey(opts.Key)
	if err != nil {
		return nil, fmt.Errorf("wsjs: peer ID of the key: %w", err)
	}
	rm := opts.ResourceManager
	if rm == nil {
		if rm, err = DefaultResourceManager(); err != nil {
			return nil, err
		}
	}
	var cleanup []func() error
	fail := func(err error) (lphost.Host, error) {
		for i := len(cleanup) - 1; i >= 0; i-- {
			_ = cleanup[i]()
		}
		return nil, fmt.Errorf("wsjs: %w", err)
	}
	cleanup = append(cleanup, rm.Close)

	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		return fail(fmt.Errorf("peerstore: %w", err))
	}
	cleanup = append(cleanup, ps.Close)
	if err := ps.AddPrivKey(id, opts.Key); err != nil {
		return fail(err)
	}
	if err := ps.AddPubKey(id, opts.Key.GetPublic()); err != nil {
		return fail(err)
	}

	muxers := []tptu.StreamMuxer{{ID: yamux.ID, Muxer: yamux.DefaultTransport}}
	sec0, err := noise.New(noise.ID, opts.Key, muxers)
	if err != nil {
		return fail(fmt.Errorf("noise: %w", err))
	}
	upgrader, err := tptu.New([]sec.SecureTransport{sec0}, muxers, nil, rm, nil)
	if err != nil {
		return fail(fmt.Errorf("upgrader: %w", err))
	}

	bus := eventbus.NewBus()
	sw, err := swarm.NewSwarm(id, ps, bus, swarm.WithResourceManager(rm))
	if err != nil {
		return fail(fmt.Errorf("swarm: %w", err))
	}
	cleanup = append(cleanup, sw.Close)
	if err := sw.AddTransport(New(upgrader, rm)); err != nil {
		return fail(fmt.Errorf("adding the WebSocket transport: %w", err))
	}

	cm, err := connmgr.NewConnManager(connLow, connHigh, connmgr.WithGracePeriod(connGrace))
	if err != nil {
		return fail(fmt.Errorf("connection manager: %w", err))
	}
	cleanup = append(cleanup, cm.Close)

	h, err := basichost.NewHost(sw, &basichost.HostOpts{
		EventBus:    bus,
		ConnManager: cm,
		EnablePing:  true,
		UserAgent:   opts.UserAgent,
		// Our own addresses are only relayed ones; the host.Host caller
		// adds them (as /p2p-circuit addresses) once it holds reservations.
		AddrsFactory: func(addrs []ma.Multiaddr) []ma.Multiaddr { return dropBareCircuit(addrs) },
	})
	if err != nil {
		return fail(fmt.Errorf("basic host: %w", err))
	}
	// From here on, h.Close closes the swarm, peerstore, connection manager
	// and resource manager.
	if err := client.AddTransport(h, upgrader); err != nil {
		_ = h.Close()
		return nil, fmt.Errorf("wsjs: circuit relay client: %w", err)
	}
	h.Start()
	return h, nil
}

// dropBareCircuit removes the bare "/p2p-circuit" listen address the relay
// client registers: it is no address anyone can dial.
func dropBareCircuit(addrs []ma.Multiaddr) []ma.Multiaddr {
	out := addrs[:0:0]
	for _, a := range addrs {
		if len(a) == 1 && a[0].Protocol().Code == ma.P_CIRCUIT {
			continue
		}
		out = append(out, a)
	}
	return out
}

// DefaultResourceManager is go-libp2p's default resource manager sized for
// a browser tab: limits scaled for 512 MiB and 1024 "file descriptors"
// (WebSockets), not auto-scaled from the machine, which a browser does not
// reveal.
func DefaultResourceManager() (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.Scale(512<<20, 1024)))
	if err != nil {
		return nil, fmt.Errorf("wsjs: resource manager: %w", err)
	}
	return rm, nil
}
