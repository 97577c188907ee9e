// Package peerrecord lets peers that cannot be dialled directly (browser
// nodes, nodes behind NAT) be found by their peer ID: each such peer
// publishes a signed libp2p peer record (core/record envelope around a
// peer.PeerRecord, listing its /p2p-circuit addresses) to the relays it holds
// reservations with, and any node answers lookups for the records it holds.
//
// The records are self-certifying: a relay can store and hand them out, but
// cannot forge or alter them. The package builds for js/wasm (the browser
// node publishes with it); it must not import node/ or anything that needs
// sockets.
package peerrecord

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// DefaultProtocol is the stream protocol of record publishing and lookup
// under the default "/hearth" prefix; ProtocolFor builds it for others.
const DefaultProtocol = "/hearth/peer-record/1.0.0"

// ProtocolFor is the record protocol under an application prefix.
func ProtocolFor(prefix string) string { return prefix + "/peer-record/1.0.0" }

// The wire format, one request and one response per stream:
//
//	request  = op(1 byte) uvarint(len) payload
//	response = status(1 byte) uvarint(len) payload
//
// A publish carries a marshalled envelope and gets an empty OK; a lookup
// carries the binary peer ID and gets the envelope. Records are small (a few
// addresses and a signature), so frames are capped at maxFrame.
const (
	opPublish byte = 1
	opLookup  byte = 2

	statusOK       byte = 0
	statusNotFound byte = 1
	statusRefused  byte = 2

	maxFrame = 4 << 10
)

// ErrNotFound is returned by Lookup when the asked peer holds no record.
var ErrNotFound = errors.New("peerrecord: no record for that peer")

func writeFrame(w io.Writer, kind byte, payload []byte) error {
	if len(payload) > maxFrame {
		return fmt.Errorf("peerrecord: frame of %d bytes exceeds %d", len(payload), maxFrame)
	}
	buf := make([]byte, 0, 1+binary.MaxVarintLen64+len(payload))
	buf = append(buf, kind)
	buf = binary.AppendUvarint(buf, uint64(len(payload)))
	buf = append(buf, payload...)
	_, err := w.Write(buf)
	return err
}

func readFrame(r *bufio.Reader) (byte, []byte, error) {
	kind, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, nil, err
	}
	if n > maxFrame {
		return 0, nil, fmt.Errorf("peerrecord: frame of %d bytes exceeds %d", n, maxFrame)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return kind, payload, nil
}
