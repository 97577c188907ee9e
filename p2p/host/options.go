package host

import (
	"log/slog"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"hearth/p2p/identity"
)

// DefaultProtocolPrefix prefixes Hearth's own protocols: the DHT
// ("/hearth/kad/1.0.0") and peer records ("/hearth/peer-record/1.0.0"), so
// Hearth nodes never mix with another libp2p network's DHT.
const DefaultProtocolPrefix = "/hearth"

// UserAgent is what identify tells other peers we run, natively and in
// the browser.
const UserAgent = "hearth"

// MDNSService is the DNS-SD service name Hearth nodes announce on the LAN.
const MDNSService = "_hearth._udp"

// Options configure a Host. Only Identity is required.
type Options struct {
	Identity *identity.Identity
	// Listen addresses: TCP (/ip4/0.0.0.0/tcp/4001), QUIC v1
	// (/ip4/0.0.0.0/udp/4001/quic-v1) and WebSocket (/ip4/0.0.0.0/tcp/4002/ws,
	// what browsers dial). Empty: listen nowhere (reach out only, and be
	// reached through relays).
	Listen []ma.Multiaddr
	// Bootstrap peers (full addresses ending in /p2p/<peer ID>) to stay
	// connected to, with retry and backoff. They also seed the DHT.
	Bootstrap []ma.Multiaddr
	// Relays (full addresses) to hold a circuit relay v2 reservation with,
	// publishing our signed peer record (with the /p2p-circuit addresses)
	// to each, so peers that cannot dial us find and reach us by name.
	Relays []ma.Multiaddr
	// MDNS discovers and connects to Hearth nodes on the LAN.
	MDNS bool
	// DHT runs the Kademlia DHT (server mode) for finding peers by ID.
	DHT bool
	// RelayService offers circuit relay v2 to other peers (browsers).
	RelayService bool
	// Relay sizes the relay service; zero fields take DefaultRelayLimits.
	Relay RelayLimits
	// ProtocolPrefix defaults to DefaultProtocolPrefix.
	ProtocolPrefix string
	Logger         *slog.Logger
}

// RelayLimits size the circuit relay v2 service for federation traffic.
// go-libp2p's defaults (128 KiB and 2 minutes per circuit, 8 reservations
// per IP, 16 circuits per peer, public addresses only) break backfill and
// the offline demo.
type RelayLimits struct {
	// CircuitData is the most bytes relayed per circuit in each direction;
	// CircuitDuration the longest a circuit lives. The relay resets the
	// circuit past either and the peers redial.
	CircuitData     int64
	CircuitDuration time.Duration
	// Unlimited lifts the per-circuit limits entirely. Circuits then are
	// ordinary (not "limited") connections to both ends.
	Unlimited bool
	// MaxReservations in total, per IP address (all browsers on one machine
	// or behind one NAT share an IP), and MaxCircuits per peer.
	MaxReservations      int
	MaxReservationsPerIP int
	MaxCircuits          int
	// ReservationTTL is how long a reservation lasts before it must be
	// refreshed.
	ReservationTTL time.Duration
}

// DefaultRelayLimits are sized so a browser node can backfill a large room
// through its relay: 64 MiB and 1 hour per circuit, 1024 reservations (256
// per IP), 128 circuits per peer.
func DefaultRelayLimits() RelayLimits {
	return RelayLimits{
		CircuitData:          64 << 20,
		CircuitDuration:      time.Hour,
		MaxReservations:      1024,
		MaxReservationsPerIP: 256,
		MaxCircuits:          128,
		ReservationTTL:       time.Hour,
	}
}
