package peerrecord

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"
)

func newKey(t *testing.T) (crypto.PrivKey, peer.ID) {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, id
}

func sealed(t *testing.T, priv crypto.PrivKey, id peer.ID, seq uint64, addr string) []byte {
	t.Helper()
	rec := peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{ma.StringCast(addr)}})
	rec.Seq = seq
	env, err := record.Seal(rec, priv)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestStoreKeepsOwnNewestRecords(t *testing.T) {
	priv, id := newKey(t)
	s := NewStore(0, 0)
	if err := s.Put(id, sealed(t, priv, id, 2, "/ip4/127.0.0.1/tcp/1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(id, sealed(t, priv, id, 1, "/ip4/127.0.0.1/tcp/2")); !errors.Is(err, ErrStale) {
		t.Fatalf("older record: %v, want ErrStale", err)
	}
	if err := s.Put(id, sealed(t, priv, id, 3, "/ip4/127.0.0.1/tcp/3")); err != nil {
		t.Fatal(err)
	}
	raw, ok := s.Get(id)
	if !ok {
		t.Fatal("record not held")
	}
	pr, _, err := Open(raw)
	if err != nil || pr.Seq != 3 || pr.Addrs[0].String() != "/ip4/127.0.0.1/tcp/3" {
		t.Fatalf("held %+v (%v), want the seq 3 record", pr, err)
	}
}

func TestStoreRefusesOthersRecords(t *testing.T) {
	priv, id := newKey(t)
	_, other := newKey(t)
	s := NewStore(0, 0)
	// other hands in id's genuine record: only id may publish it.
	if err := s.Put(other, sealed(t, priv, id, 1, "/ip4/127.0.0.1/tcp/1")); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("record published by another peer: %v, want ErrNotOwner", err)
	}
	// A record describing id but signed by another key is a forgery.
	otherPriv, _ := newKey(t)
	if err := s.Put(id, sealed(t, otherPriv, id, 1, "/ip4/127.0.0.1/tcp/1")); err == nil {
		t.Fatal("forged record accepted")
	}
	// Garbage and tampered envelopes fail to open.
	raw := sealed(t, priv, id, 1, "/ip4/127.0.0.1/tcp/1")
	raw[len(raw)-1] ^= 1
	if err := s.Put(id, raw); err == nil {
		t.Fatal("tampered record accepted")
	}
	if err := s.Put(id, []byte("junk")); err == nil {
		t.Fatal("junk accepted")
	}
	if s.Len() != 0 {
		t.Fatalf("store holds %d records", s.Len())
	}
}

func TestStoreExpiresAndBounds(t *testing.T) {
	s := NewStore(time.Minute, 2)
	now := time.Now()
	s.now = func() time.Time { return now }
	var ids []peer.ID
	for i := range 3 {
		priv, id := newKey(t)
		err := s.Put(id, sealed(t, priv, id, 1, "/ip4/127.0.0.1/tcp/1"))
		if i < 2 && err != nil {
			t.Fatal(err)
		}
		if i == 2 && !errors.Is(err, ErrFull) {
			t.Fatalf("third record in a store of 2: %v, want ErrFull", err)
		}
		ids = append(ids, id)
	}
	now = now.Add(2 * time.Minute)
	if _, ok := s.Get(ids[0]); ok {
		t.Fatal("expired record still served")
	}
	// Expired records make room again.
	priv, id := newKey(t)
	if err := s.Put(id, sealed(t, priv, id, 1, "/ip4/127.0.0.1/tcp/1")); err != nil {
		t.Fatalf("put after expiry: %v", err)
	}
}

func TestFramesRoundTripAndCap(t *testing.T) {
	var buf bytes.Buffer
	if err := writeFrame(&buf, opLookup, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	op, payload, err := readFrame(bufio.NewReader(&buf))
	if err != nil || op != opLookup || string(payload) != "abc" {
		t.Fatalf("got %d %q %v", op, payload, err)
	}
	if err := writeFrame(&buf, opPublish, make([]byte, maxFrame+1)); err == nil {
		t.Fatal("oversized frame written")
	}
	// A length prefix beyond the cap is refused before allocating.
	huge := []byte{opPublish, 0xff, 0xff, 0xff, 0xff, 0x0f}
	if _, _, err := readFrame(bufio.NewReader(bytes.NewReader(huge))); err == nil {
		t.Fatal("oversized frame read")
	}
}
