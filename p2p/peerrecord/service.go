package peerrecord

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/record"
)

// streamTimeout bounds one publish or lookup exchange.
const streamTimeout = 10 * time.Second

// Service answers publish and lookup requests on a host.
type Service struct {
	h     host.Host
	proto protocol.ID
	store *Store
	seen  *Store // records peers sent us in identify
	sub   event.Subscription
	done  chan struct{}
	log   *slog.Logger
}

// NewService registers the record protocol on h, keeping published records
// in store. Lookups are answered from the store first, then from the signed
// records peers sent in identify (which go-libp2p does not keep), so a node
// also vouches for the self-signed addresses of the peers it has met.
func NewService(h host.Host, proto protocol.ID, store *Store, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.Default()
	}
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return nil, fmt.Errorf("peerrecord: subscribing to identify: %w", err)
	}
	s := &Service{
		h: h, proto: proto, store: store, log: log,
		seen: NewStore(time.Hour, DefaultMaxRecords),
		sub:  sub, done: make(chan struct{}),
	}
	go s.collect()
	h.SetStreamHandler(proto, s.handle)
	return s, nil
}

// collect keeps the signed records of identified peers. It never blocks
// on anything but the store's mutex, so it drains the event bus promptly.
func (s *Service) collect() {
	defer close(s.done)
	for e := range s.sub.Out() {
		ev, ok := e.(event.EvtPeerIdentificationCompleted)
		if !ok || ev.SignedPeerRecord == nil {
			continue
		}
		raw, err := ev.SignedPeerRecord.Marshal()
		if err != nil {
			continue
		}
		if err := s.seen.Put(ev.Peer, raw); err != nil {
			s.log.Debug("peerrecord: identify record not kept", "peer", ev.Peer, "err", err)
		}
	}
}

// Close stops answering.
func (s *Service) Close() {
	s.h.RemoveStreamHandler(s.proto)
	_ = s.sub.Close()
	<-s.done
}

// Store is where published records are kept.
func (s *Service) Store() *Store { return s.store }

func (s *Service) handle(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(streamTimeout))
	from := st.Conn().RemotePeer()
	op, payload, err := readFrame(bufio.NewReader(st))
	if err != nil {
		s.log.Debug("peerrecord: bad request", "peer", from, "err", err)
		_ = st.Reset()
		return
	}
	switch op {
	case opPublish:
		if err := s.store.Put(from, payload); err != nil {
			s.log.Debug("peerrecord: publish refused", "peer", from, "err", err)
			_ = writeFrame(st, statusRefused, []byte(err.Error()))
			return
		}
		_ = writeFrame(st, statusOK, nil)
	case opLookup:
		target, err := peer.IDFromBytes(payload)
		if err != nil {
			_ = writeFrame(st, statusRefused, []byte("bad peer ID"))
			return
		}
		if raw, ok := s.lookup(target); ok {
			_ = writeFrame(st, statusOK, raw)
			return
		}
		_ = writeFrame(st, statusNotFound, nil)
	default:
		_ = writeFrame(st, statusRefused, []byte("unknown operation"))
	}
}

func (s *Service) lookup(target peer.ID) ([]byte, bool) {
	if raw, ok := s.store.Get(target); ok {
		return raw, true
	}
	return s.seen.Get(target)
}

// Publish hands our signed record (from Seal) to the peer to.
func Publish(ctx context.Context, h host.Host, proto protocol.ID, to peer.ID, raw []byte) error {
	status, payload, err := exchange(ctx, h, proto, to, opPublish, raw)
	if err != nil {
		return fmt.Errorf("peerrecord: publishing to %s: %w", to, err)
	}
	if status != statusOK {
		return fmt.Errorf("peerrecord: %s refused our record: %s", to, payload)
	}
	return nil
}

// Lookup asks the peer from for target's record and verifies it: the
// answer must be signed by target itself. It returns the record and its
// envelope (for a certified address book).
func Lookup(ctx context.Context, h host.Host, proto protocol.ID, from, target peer.ID) (*peer.PeerRecord, *record.Envelope, error) {
	status, payload, err := exchange(ctx, h, proto, from, opLookup, []byte(target))
	if err != nil {
		return nil, nil, fmt.Errorf("peerrecord: looking %s up at %s: %w", target, from, err)
	}
	switch status {
	case statusOK:
	case statusNotFound:
		return nil, nil, ErrNotFound
	default:
		return nil, nil, fmt.Errorf("peerrecord: %s refused the lookup: %s", from, payload)
	}
	pr, env, err := Open(payload)
	if err != nil {
		return nil, nil, err
	}
	if pr.PeerID != target {
		return nil, nil, errors.New("peerrecord: answer describes another peer")
	}
	return pr, env, nil
}

func exchange(ctx context.Context, h host.Host, proto protocol.ID, to peer.ID, op byte, payload []byte) (byte, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, streamTimeout)
	defer cancel()
	// Records are exchanged with relays, which browsers reach directly; the
	// permission only matters when the asked peer is itself behind a relay.
	st, err := h.NewStream(network.WithAllowLimitedConn(ctx, "hearth peer record"), to, proto)
	if err != nil {
		return 0, nil, err
	}
	defer st.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(d)
	}
	if err := writeFrame(st, op, payload); err != nil {
		_ = st.Reset()
		return 0, nil, err
	}
	if err := st.CloseWrite(); err != nil {
		_ = st.Reset()
		return 0, nil, err
	}
	status, resp, err := readFrame(bufio.NewReader(st))
	if err != nil {
		_ = st.Reset()
		return 0, nil, err
	}
	return status, resp, nil
}
