// Package resolve reaches a peer known only by its ID (decoded from a
// server name): from the addresses the peerstore already holds, from signed
// peer records held by the peers we are connected to (relays vouching for
// browser peers behind them), and from the Kademlia DHT.
//
// It builds for js/wasm; routing is an interface, so the native host can
// hand it the DHT and the browser host can leave it out. It must not import
// node/.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"

	"hearth/p2p/peerrecord"
)

// Timeouts of the steps of Connect; the caller's context bounds the whole.
const (
	dialTimeout   = 10 * time.Second
	lookupTimeout = 5 * time.Second
	routeTimeout  = 15 * time.Second
)

// Resolver implements fedhttp.Connector.
type Resolver struct {
	h           host.Host
	recordProto protocol.ID
	routing     routing.PeerRouting // nil: no DHT
	log         *slog.Logger
}

// New returns a resolver for h. recordProto is the peer-record protocol
// (peerrecord.ProtocolFor(prefix)); routing may be nil.
func New(h host.Host, recordProto protocol.ID, r routing.PeerRouting, log *slog.Logger) *Resolver {
	if log == nil {
		log = slog.Default()
	}
	return &Resolver{h: h, recordProto: recordProto, routing: r, log: log}
}

// ErrUnreachable wraps the reasons no path to a peer was found.
var ErrUnreachable = errors.New("resolve: peer unreachable")

// Connect makes sure h is connected to p, relayed connections included.
func (r *Resolver) Connect(ctx context.Context, p peer.ID) error {
	if p == r.h.ID() {
		return errors.New("resolve: cannot connect to self")
	}
	ctx = network.WithAllowLimitedConn(ctx, "hearth federation")
	switch r.h.Network().Connectedness(p) {
	case network.Connected, network.Limited:
		return nil
	}
	var errs []error
	if len(r.h.Peerstore().Addrs(p)) > 0 {
		err := r.dial(ctx, peer.AddrInfo{ID: p})
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("known addresses: %w", err))
	}
	if ai, err := r.lookupRecord(ctx, p); err != nil {
		errs = append(errs, fmt.Errorf("peer records: %w", err))
	} else if err := r.dial(ctx, ai); err != nil {
		errs = append(errs, fmt.Errorf("recorded addresses: %w", err))
	} else {
		return nil
	}
	if r.routing != nil {
		rctx, cancel := context.WithTimeout(ctx, routeTimeout)
		ai, err := r.routing.FindPeer(rctx, p)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("DHT: %w", err))
		} else if err := r.dial(ctx, ai); err != nil {
			errs = append(errs, fmt.Errorf("DHT addresses: %w", err))
		} else {
			return nil
		}
	}
	return fmt.Errorf("%w: %s: %w", ErrUnreachable, p, errors.Join(errs...))
}

func (r *Resolver) dial(ctx context.Context, ai peer.AddrInfo) error {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	// The caller (a federation queue) retries on its own schedule; the
	// swarm's per-address dial backoff on top of it would turn a peer that
	// came back a second ago into minutes of failures.
	if sw, ok := r.h.Network().(interface{ Backoff() *swarm.DialBackoff }); ok {
		sw.Backoff().Clear(ai.ID)
	}
	return r.h.Connect(ctx, ai)
}

// lookupRecord asks every connected peer that speaks the record protocol
// for p's signed record, and returns the first valid answer's addresses.
func (r *Resolver) lookupRecord(ctx context.Context, p peer.ID) (peer.AddrInfo, error) {
	var asked []peer.ID
	for _, c := range r.h.Network().Peers() {
		if c == p {
			continue
		}
		if ok, _ := r.h.Peerstore().SupportsProtocols(c, r.recordProto); len(ok) == 0 {
			continue
		}
		asked = append(asked, c)
	}
	if len(asked) == 0 {
		return peer.AddrInfo{}, errors.New("no connected peer answers record lookups")
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	type answer struct {
		ai  peer.AddrInfo
		err error
	}
	answers := make(chan answer, len(asked))
	for _, from := range asked {
		go func() {
			pr, env, err := peerrecord.Lookup(ctx, r.h, r.recordProto, from, p)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			// Keep the signed record: identify and later lookups prefer
			// certified addresses. A stale sequence number is refused
			// quietly, which is fine: the addresses are dialled below.
			if cab, ok := peerstore.GetCertifiedAddrBook(r.h.Peerstore()); ok {
				_, _ = cab.ConsumePeerRecord(env, peerstore.TempAddrTTL)
			}
			answers <- answer{ai: peer.AddrInfo{ID: p, Addrs: slices.Clone(pr.Addrs)}}
		}()
	}
	var errs []error
	for range asked {
		a := <-answers
		if a.err == nil && len(a.ai.Addrs) > 0 {
			return a.ai, nil
		}
		if a.err != nil && !errors.Is(a.err, peerrecord.ErrNotFound) {
			errs = append(errs, a.err)
		}
	}
	if len(errs) == 0 {
		return peer.AddrInfo{}, peerrecord.ErrNotFound
	}
	return peer.AddrInfo{}, errors.Join(errs...)
}
