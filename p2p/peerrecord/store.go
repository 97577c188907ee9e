package peerrecord

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
)

// Defaults for a Store.
const (
	// DefaultTTL is how long a published record is kept. Publishers refresh
	// with every relay reservation refresh (at most hourly), so two hours
	// outlives one missed refresh.
	DefaultTTL = 2 * time.Hour
	// DefaultMaxRecords bounds the memory any number of publishers can take
	// (at most 4096 records of at most 4 KiB).
	DefaultMaxRecords = 4096
)

// Store holds the signed peer records published to this node. It is safe
// for concurrent use.
type Store struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu      sync.Mutex
	records map[peer.ID]stored
}

type stored struct {
	raw     []byte
	seq     uint64
	expires time.Time
}

// NewStore returns an empty store; zero arguments take the defaults.
func NewStore(ttl time.Duration, maxRecords int) *Store {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if maxRecords <= 0 {
		maxRecords = DefaultMaxRecords
	}
	return &Store{ttl: ttl, max: maxRecords, now: time.Now, records: make(map[peer.ID]stored)}
}

// Errors of Put.
var (
	ErrNotOwner = errors.New("peerrecord: a peer may only publish its own record")
	ErrStale    = errors.New("peerrecord: record is older than the one held")
	ErrFull     = errors.New("peerrecord: store is full")
)

// Open verifies a marshalled envelope and returns the peer record in it.
// The envelope's signature must verify and its signer must be the peer the
// record describes (ConsumeEnvelope checks only the signature).
func Open(raw []byte) (*peer.PeerRecord, *record.Envelope, error) {
	env, rec, err := record.ConsumeEnvelope(raw, peer.PeerRecordEnvelopeDomain)
	if err != nil {
		return nil, nil, fmt.Errorf("peerrecord: %w", err)
	}
	pr, ok := rec.(*peer.PeerRecord)
	if !ok {
		return nil, nil, fmt.Errorf("peerrecord: envelope holds a %T, not a peer record", rec)
	}
	if !pr.PeerID.MatchesPublicKey(env.PublicKey) {
		return nil, nil, errors.New("peerrecord: record is not signed by the peer it describes")
	}
	return pr, env, nil
}

// Put stores a record published by from. Only a peer's own record is
// accepted, and a record never replaces a newer one (by its sequence number).
func (s *Store) Put(from peer.ID, raw []byte) error {
	pr, _, err := Open(raw)
	if err != nil {
		return err
	}
	if pr.PeerID != from {
		return ErrNotOwner
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.records[from]
	if had && old.expires.After(now) && pr.Seq < old.seq {
		return ErrStale
	}
	if !had && len(s.records) >= s.max {
		s.expireLocked(now)
		if len(s.records) >= s.max {
			return ErrFull
		}
	}
	s.records[from] = stored{raw: raw, seq: pr.Seq, expires: now.Add(s.ttl)}
	return nil
}

// Get returns the marshalled envelope held for p, if it has not expired.
func (s *Store) Get(p peer.ID) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[p]
	if !ok {
		return nil, false
	}
	if !r.expires.After(s.now()) {
		delete(s.records, p)
		return nil, false
	}
	return r.raw, true
}

// Len is the number of records held, expired ones included until swept.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.records)
}

func (s *Store) expireLocked(now time.Time) {
	for p, r := range s.records {
		if !r.expires.After(now) {
			delete(s.records, p)
		}
	}
}

// Seal signs a peer record for info with priv (the key of info.ID) and
// marshals it. Its sequence number is a timestamp, so a later record always
// supersedes an earlier one.
func Seal(info peer.AddrInfo, priv crypto.PrivKey) ([]byte, error) {
	env, err := record.Seal(peer.PeerRecordFromAddrInfo(info), priv)
	if err != nil {
		return nil, fmt.Errorf("peerrecord: sealing: %w", err)
	}
	raw, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("peerrecord: marshalling: %w", err)
	}
	return raw, nil
}
