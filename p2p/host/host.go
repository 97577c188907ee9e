// Package host runs a Hearth node's libp2p host and what hangs off it:
// bootstrap connections kept up with backoff, relay reservations with signed
// peer records published to the relays, the peer-record service, name →
// peer resolution, federation HTTP over streams (server and RoundTripper),
// and the peer list for the status endpoint. Natively (new_native.go) it
// also runs the TCP/QUIC/WebSocket transports, the resource manager, the
// circuit relay v2 service, mDNS and the Kademlia DHT.
//
// Files without build tags must build for js/wasm: the browser's
// hand-assembled host will reuse them; only *_native.go may use libp2p.New
// and what needs sockets. It must not import node/.
package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	lphost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"

	"hearth/p2p/fedhttp"
	"hearth/p2p/identity"
	"hearth/p2p/peerrecord"
	"hearth/p2p/resolve"
)

// Host is a running libp2p host of a Hearth node.
type Host struct {
	id      *identity.Identity
	h       lphost.Host
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	records *peerrecord.Service
	recProt protocol.ID
	resolve *resolve.Resolver
	rt      *fedhttp.Transport
	routing routing.PeerRouting
	closers []func() error // platform parts, closed in reverse order

	mu       sync.Mutex
	server   *fedhttp.Server
	circuits map[peer.ID][]ma.Multiaddr // our /p2p-circuit addresses, by relay
	closed   bool
}

// assemble wires the platform-independent parts onto a constructed host.
// It takes ownership of h and closers (closing them if it fails).
func assemble(opts Options, h lphost.Host, rt routing.PeerRouting, closers []func() error) (*Host, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "p2p")
	prefix := opts.ProtocolPrefix
	if prefix == "" {
		prefix = DefaultProtocolPrefix
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Host{
		id:       opts.Identity,
		h:        h,
		log:      log,
		ctx:      ctx,
		cancel:   cancel,
		recProt:  protocol.ID(peerrecord.ProtocolFor(prefix)),
		routing:  rt,
		closers:  closers,
		circuits: make(map[peer.ID][]ma.Multiaddr),
	}
	records, err := peerrecord.NewService(h, n.recProt, peerrecord.NewStore(0, 0), log)
	if err != nil {
		cancel()
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
		_ = h.Close()
		return nil, fmt.Errorf("p2p: %w", err)
	}
	n.records = records
	n.resolve = resolve.New(h, n.recProt, rt, log)
	n.rt = fedhttp.NewTransport(h, n.resolve)

	bootstrap, err := addrInfos(opts.Bootstrap)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("p2p: bootstrap: %w", err)
	}
	relays, err := addrInfos(opts.Relays)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("p2p: relays: %w", err)
	}
	for _, ai := range bootstrap {
		n.goKeepConnected(ai)
	}
	for _, ai := range relays {
		n.goKeepReservation(ai)
	}
	return n, nil
}

// addrInfos groups full multiaddrs (ending in /p2p/<id>) by peer.
func addrInfos(addrs []ma.Multiaddr) ([]peer.AddrInfo, error) {
	if len(addrs) == 0 {
		return nil, nil
	}
	infos, err := peer.AddrInfosFromP2pAddrs(addrs...)
	if err != nil {
		return nil, fmt.Errorf("addresses must end in /p2p/<peer ID>: %w", err)
	}
	return infos, nil
}

// spawn runs f in a goroutine Close waits for, unless the host is closing.
func (n *Host) spawn(f func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// ID is the host's peer ID.
func (n *Host) ID() peer.ID { return n.h.ID() }

// ServerName is the node's Matrix server name.
func (n *Host) ServerName() string { return n.id.ServerName }

// LibP2P is the underlying libp2p host, for protocols of other packages.
func (n *Host) LibP2P() lphost.Host { return n.h }

// Routing is the DHT, or nil when it is off.
func (n *Host) Routing() routing.PeerRouting { return n.routing }

// Records is the store of peer records published to this node.
func (n *Host) Records() *peerrecord.Store { return n.records.Store() }

// RoundTripper sends matrix://<server name>/... and http://<server name>/...
// requests to peers over libp2p streams: give it to gomatrixserverlib's
// fclient.WithTransport.
func (n *Host) RoundTripper() http.RoundTripper { return n.rt }

// Connect reaches the server called name (finding it if needed).
func (n *Host) Connect(ctx context.Context, name string) error {
	id, err := identity.PeerIDOf(name)
	if err != nil {
		return err
	}
	return n.resolve.Connect(ctx, id)
}

// Serve answers federation HTTP from peers with handler, at "/" of the
// "/http/1.1" stream protocol. Handlers find the authenticated peer with
// fedhttp.RemoteServerName(r). One handler per host.
func (n *Host) Serve(handler http.Handler) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("p2p: host closed")
	}
	if n.server != nil {
		return errors.New("p2p: already serving")
	}
	s, err := fedhttp.Serve(n.h, handler, n.log)
	if err != nil {
		return fmt.Errorf("p2p: serving federation: %w", err)
	}
	n.server = s
	return nil
}

// Close stops everything and closes the host.
func (n *Host) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	server := n.server
	n.mu.Unlock()

	n.cancel()
	n.wg.Wait()
	var errs []error
	if server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, server.Close(ctx))
		cancel()
	}
	n.rt.CloseIdleConnections()
	n.records.Close()
	for i := len(n.closers) - 1; i >= 0; i-- {
		errs = append(errs, n.closers[i]())
	}
	errs = append(errs, n.h.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("p2p: closing: %w", err)
	}
	return nil
}
