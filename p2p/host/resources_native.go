//go:build !js

package host

import (
	"math"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/x/rate"

	"hearth/p2p/fedhttp"
)

// privateV4 and privateV6 are the LAN ranges. go-libp2p exempts only
// loopback from its per-IP connection caps (8 per IPv4 address) and its
// connection rate limit (one every 5 s per IP after a burst of 16); on a LAN
// all browsers behind one router share an address, so Hearth lifts both
// for private ranges as well.
var (
	privateV4 = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"}
	privateV6 = []string{"fc00::/7", "fe80::/10"}
)

// newResourceManager is go-libp2p's auto-scaled default resource manager
// with room for federation: more concurrent HTTP streams per peer, relay
// limits that follow the configured circuits, and no per-IP caps on
// loopback and LAN addresses.
func newResourceManager(l RelayLimits) (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)

	// Federation HTTP: a busy peer (backfill, a /send per room) may hold
	// many streams at once; the default is 64 inbound per peer.
	limits.AddProtocolLimit(fedhttp.Protocol,
		rcmgr.BaseLimit{StreamsInbound: 2048, StreamsOutbound: 2048, Streams: 4096, Memory: 256 << 20},
		rcmgr.BaseLimitIncrease{StreamsInbound: 1024, StreamsOutbound: 1024, Streams: 2048, Memory: 128 << 20})
	limits.AddProtocolPeerLimit(fedhttp.Protocol,
		rcmgr.BaseLimit{StreamsInbound: 256, StreamsOutbound: 256, Streams: 512, Memory: 64 << 20},
		rcmgr.BaseLimitIncrease{})

	// Every relayed circuit holds one stream in the relay service scope of
	// each of its two ends (hop from the source, stop to the destination),
	// so per-peer stream limits must cover MaxCircuits, with headroom for
	// reservations and handshakes.
	perPeer := 2*l.MaxCircuits + 16
	total := max(4*l.MaxReservations, 1024)
	limits.AddServiceLimit(relay.ServiceName,
		rcmgr.BaseLimit{StreamsInbound: total, StreamsOutbound: total, Streams: 2 * total, Memory: 128 << 20},
		rcmgr.BaseLimitIncrease{StreamsInbound: total, StreamsOutbound: total, Streams: 2 * total, Memory: 64 << 20})
	limits.AddServicePeerLimit(relay.ServiceName,
		rcmgr.BaseLimit{StreamsInbound: perPeer, StreamsOutbound: perPeer, Streams: 2 * perPeer, Memory: 16 << 20},
		rcmgr.BaseLimitIncrease{})
	for _, p := range []protocol.ID{proto.ProtoIDv2Hop, proto.ProtoIDv2Stop} {
		limits.AddProtocolLimit(p,
			rcmgr.BaseLimit{StreamsInbound: total, StreamsOutbound: total, Streams: 2 * total, Memory: 64 << 20},
			rcmgr.BaseLimitIncrease{StreamsInbound: total, StreamsOutbound: total, Streams: 2 * total, Memory: 32 << 20})
		limits.AddProtocolPeerLimit(p,
			rcmgr.BaseLimit{StreamsInbound: perPeer, StreamsOutbound: perPeer, Streams: 2 * perPeer, Memory: 32 << 20},
			rcmgr.BaseLimitIncrease{})
	}

	v4, v6, rateLimits := unlimitedPrefixes()
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()),
		rcmgr.WithNetworkPrefixLimit(v4, v6),
		rcmgr.WithConnRateLimiters(&rate.Limiter{
			NetworkPrefixLimits: rateLimits,
			SubnetRateLimiter: rate.SubnetLimiter{
				// go-libp2p's defaults for everything else.
				IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: rate.Limit{RPS: 0.2, Burst: 16}}},
				IPv6SubnetLimits: []rate.SubnetLimit{
					{PrefixLength: 56, Limit: rate.Limit{RPS: 0.2, Burst: 16}},
					{PrefixLength: 48, Limit: rate.Limit{RPS: 0.5, Burst: 80}},
				},
				GracePeriod: time.Minute,
			},
		}),
	)
}

// unlimitedPrefixes lists loopback and the LAN ranges as exempt from the
// per-IP connection caps and the connection rate limit.
func unlimitedPrefixes() (v4, v6 []rcmgr.NetworkPrefixLimit, rateLimits []rate.PrefixLimit) {
	add := func(dst *[]rcmgr.NetworkPrefixLimit, s string) {
		p := netip.MustParsePrefix(s)
		*dst = append(*dst, rcmgr.NetworkPrefixLimit{Network: p, ConnCount: math.MaxInt})
		rateLimits = append(rateLimits, rate.PrefixLimit{Prefix: p, Limit: rate.Limit{}})
	}
	add(&v4, "127.0.0.0/8")
	for _, s := range privateV4 {
		add(&v4, s)
	}
	add(&v6, "::1/128")
	for _, s := range privateV6 {
		add(&v6, s)
	}
	return v4, v6, rateLimits
}
