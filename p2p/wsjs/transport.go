// Package wsjs is the browser node's libp2p plumbing: a dial-only
// WebSocket transport on github.com/coder/websocket (which, under js/wasm,
// drives the browser's own WebSocket) and a go-libp2p host assembled by hand
// from swarm, upgrader, noise, yamux, basichost (identify, ping) and the
// circuit relay v2 client, because libp2p.New does not build for js (its
// WebRTC transport) and go-libp2p's own WebSocket transport dials with
// gorilla, which needs sockets.
//
// It has no build tags: natively, coder/websocket dials over TCP, so the
// exact host the browser runs is tested with `go test` against native
// hosts. It must not import node/ or hearth/p2p/host (the host package
// builds the browser node on top of it).
package wsjs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"

	"github.com/coder/websocket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/transport"
	ma "github.com/multiformats/go-multiaddr"
)

// Transport dials /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>/ws (and /wss,
// /tls/ws, /tls/sni/<name>/ws) multiaddrs. It cannot listen: browsers
// accept no connections; peers reach a browser through a relay.
type Transport struct {
	upgrader transport.Upgrader
	rcmgr    network.ResourceManager
}

var (
	_ transport.Transport    = (*Transport)(nil)
	_ transport.SkipResolver = (*Transport)(nil)
)

// New returns a transport that upgrades the connections it dials with u
// (noise, yamux) under the resource manager rcmgr.
func New(u transport.Upgrader, rcmgr network.ResourceManager) *Transport {
	if rcmgr == nil {
		rcmgr = &network.NullResourceManager{}
	}
	return &Transport{upgrader: u, rcmgr: rcmgr}
}

// ErrNoListen is returned by Listen.
var ErrNoListen = errors.New("wsjs: this transport only dials (a browser cannot accept connections)")

// CanDial reports whether a is a WebSocket address this transport dials.
func (t *Transport) CanDial(a ma.Multiaddr) bool {
	_, err := URL(a)
	return err == nil
}

// Protocols are the multiaddr protocols the swarm routes to this transport
// (the last one of an address picks it).
func (t *Transport) Protocols() []int { return []int{ma.P_WS, ma.P_WSS} }

// Proxy is false: this is a direct transport.
func (t *Transport) Proxy() bool { return false }

// Listen always fails.
func (t *Transport) Listen(ma.Multiaddr) (transport.Listener, error) { return nil, ErrNoListen }

// SkipResolve is true: the browser resolves DNS names itself (Go's resolver
// has no network under js), so /dns4 addresses reach Dial unresolved.
func (t *Transport) SkipResolve(context.Context, ma.Multiaddr) bool { return true }

// Dial opens a WebSocket to raddr and upgrades it to a libp2p connection
// (noise, yamux) with peer p.
func (t *Transport) Dial(ctx context.Context, raddr ma.Multiaddr, p peer.ID) (transport.CapableConn, error) {
	u, err := URL(raddr)
	if err != nil {
		return nil, err
	}
	scope, err := t.rcmgr.OpenConnection(network.DirOutbound, true, raddr)
	if err != nil {
		return nil, fmt.Errorf("wsjs: resource manager refused a connection to %s: %w", raddr, err)
	}
	c, err := t.dial(ctx, u, raddr, p, scope)
	if err != nil {
		scope.Done()
		return nil, err
	}
	return c, nil
}

func (t *Transport) dial(ctx context.Context, u string, raddr ma.Multiaddr, p peer.ID, scope network.ConnManagementScope) (transport.CapableConn, error) {
	ws, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		return nil, fmt.Errorf("wsjs: dialing %s: %w", u, err)
	}
	// The net.Conn outlives ctx (the dial's context): it lives until the
	// swarm closes the connection.
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	mc := &maConn{Conn: nc, laddr: unspecified(raddr), raddr: raddr}
	cc, err := t.upgrader.Upgrade(ctx, t, mc, network.DirOutbound, p, scope)
	if err != nil {
		// The upgrader closed the connection.
		return nil, fmt.Errorf("wsjs: upgrading the connection to %s: %w", raddr, err)
	}
	return &capableConn{CapableConn: cc}, nil
}

// maConn is a WebSocket as the upgrader takes it: a net.Conn that knows
// its multiaddrs. The browser does not tell a page its local address.
type maConn struct {
	net.Conn
	laddr, raddr ma.Multiaddr
}

func (c *maConn) LocalMultiaddr() ma.Multiaddr  { return c.laddr }
func (c *maConn) RemoteMultiaddr() ma.Multiaddr { return c.raddr }

// capableConn names the transport in the connection state, as go-libp2p's
// own WebSocket transport does ("websocket").
type capableConn struct{ transport.CapableConn }

func (c *capableConn) ConnState() network.ConnectionState {
	s := c.CapableConn.ConnState()
	s.Transport = "websocket"
	return s
}

// unspecified is the local address we claim for a connection to raddr:
// 0.0.0.0 (or ::) with port 0, in the same WebSocket form.
func unspecified(raddr ma.Multiaddr) ma.Multiaddr {
	s := "/ip4/0.0.0.0/tcp/0/ws"
	if len(raddr) > 0 && raddr[0].Protocol().Code == ma.P_IP6 {
		s = "/ip6/::/tcp/0/ws"
	}
	return ma.StringCast(s)
}

// URL is the ws:// or wss:// URL of a WebSocket multiaddr. A trailing
// /p2p/<id> is allowed; anything else (a /p2p-circuit address) is not a
// WebSocket address.
func URL(a ma.Multiaddr) (string, error) {
	host, port, rest, err := hostPort(a)
	if err != nil {
		return "", err
	}
	scheme, sni, err := wsScheme(rest)
	if err != nil {
		return "", fmt.Errorf("wsjs: %s: %w", a, err)
	}
	if sni != "" {
		// The browser verifies the certificate against the URL's host and
		// resolves it itself: with an SNI name, that name is the host.
		host = sni
	}
	u := url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: "/"}
	return u.String(), nil
}

// hostPort takes the leading /ip4|ip6|dns*/<host>/tcp/<port> off a.
func hostPort(a ma.Multiaddr) (host string, port int, rest ma.Multiaddr, err error) {
	if len(a) < 3 {
		return "", 0, nil, fmt.Errorf("wsjs: %s is not a WebSocket address", a)
	}
	switch a[0].Protocol().Code {
	case ma.P_IP4, ma.P_IP6, ma.P_DNS, ma.P_DNS4, ma.P_DNS6:
		host = a[0].Value()
	default:
		return "", 0, nil, fmt.Errorf("wsjs: %s does not start with an IP address or DNS name", a)
	}
	if a[1].Protocol().Code != ma.P_TCP {
		return "", 0, nil, fmt.Errorf("wsjs: %s is not over TCP", a)
	}
	port, err = strconv.Atoi(a[1].Value())
	if err != nil {
		return "", 0, nil, fmt.Errorf("wsjs: %s: bad port: %w", a, err)
	}
	return host, port, a[2:], nil
}

// wsScheme reads what follows /tcp/<port>: /ws, /wss, /tls/ws or
// /tls/sni/<name>/ws, optionally followed by /p2p/<id>.
func wsScheme(rest ma.Multiaddr) (scheme, sni string, err error) {
	if n := len(rest); n > 0 && rest[n-1].Protocol().Code == ma.P_P2P {
		rest = rest[:n-1]
	}
	codes := make([]int, len(rest))
	for i, c := range rest {
		codes[i] = c.Protocol().Code
	}
	switch {
	case len(codes) == 1 && codes[0] == ma.P_WS:
		return "ws", "", nil
	case len(codes) == 1 && codes[0] == ma.P_WSS:
		return "wss", "", nil
	case len(codes) == 2 && codes[0] == ma.P_TLS && codes[1] == ma.P_WS:
		return "wss", "", nil
	case len(codes) == 3 && codes[0] == ma.P_TLS && codes[1] == ma.P_SNI && codes[2] == ma.P_WS:
		return "wss", rest[1].Value(), nil
	}
	return "", "", errors.New("not a WebSocket address (want .../tcp/<port>/ws, /wss or /tls[/sni/<name>]/ws)")
}
