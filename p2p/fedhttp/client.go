package fedhttp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/gostream"

	"hearth/p2p/identity"
)

// Connector makes sure a host has a connection to a peer (direct or through
// a relay), finding the peer's addresses first if it must.
type Connector interface {
	Connect(ctx context.Context, p peer.ID) error
}

// DialTimeout bounds finding a peer, connecting and opening a stream.
const DialTimeout = 30 * time.Second

// Transport is an http.RoundTripper for matrix://<server name>/... (what
// gomatrixserverlib's fclient sends to a WithTransport transport) and
// http://<server name>/... URLs. The server name is decoded to a peer ID,
// the peer is reached through the Connector, and the request travels over
// a libp2p stream. Streams are kept alive and reused like TCP connections.
//
// It is an http.Transport of our own with a stream dialer, not go-libp2p's
// p2p/http client: that one opens streams with a background context when
// the request's deadline is far, which drops the permission to use a
// limited (relayed) connection, so it cannot reach browser peers.
type Transport struct {
	h     host.Host
	conn  Connector
	inner *http.Transport
}

// NewTransport returns a transport sending from h. A nil Connector dials
// with whatever addresses h's peerstore holds.
func NewTransport(h host.Host, c Connector) *Transport {
	t := &Transport{h: h, conn: c}
	t.inner = &http.Transport{
		DialContext:         t.dial,
		MaxIdleConnsPerHost: 16,
		// Shorter than the server's idle timeout, so the client side
		// retires a stream before the server closes it under a request.
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Proxy is nil on purpose: server names are not DNS names.
	}
	return t
}

// RoundTrip sends req to the peer named by its URL's host.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.URL.Scheme {
	case "matrix", "http":
	default:
		return nil, fmt.Errorf("fedhttp: unsupported scheme %q (want matrix or http)", req.URL.Scheme)
	}
	// Check the name before anything reaches the dialer or the idle pool:
	// only the canonical spelling names a server.
	if _, err := identity.PeerIDOf(req.URL.Hostname()); err != nil {
		return nil, fmt.Errorf("fedhttp: %w", err)
	}
	out := req
	if req.URL.Scheme != "http" {
		out = req.Clone(req.Context())
		out.URL.Scheme = "http"
	}
	resp, err := t.inner.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	resp.Request = req
	return resp, nil
}

// CloseIdleConnections closes streams kept alive for reuse.
func (t *Transport) CloseIdleConnections() { t.inner.CloseIdleConnections() }

// ErrSelf is returned for a request to the host's own server name.
var ErrSelf = errors.New("fedhttp: request addressed to this node itself")

func (t *Transport) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	name, _, err := net.SplitHostPort(addr)
	if err != nil {
		name = addr
	}
	return t.DialServer(ctx, name)
}

// DialServer opens an HTTP stream to the server called name.
func (t *Transport) DialServer(ctx context.Context, name string) (net.Conn, error) {
	id, err := identity.PeerIDOf(name)
	if err != nil {
		return nil, fmt.Errorf("fedhttp: %w", err)
	}
	if id == t.h.ID() {
		return nil, ErrSelf
	}
	ctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	// The permission is a context value: it must be on the context the
	// stream is opened with, for relayed (limited) connections to be used.
	ctx = network.WithAllowLimitedConn(ctx, "hearth federation")
	if t.conn != nil {
		if err := t.conn.Connect(ctx, id); err != nil {
			return nil, fmt.Errorf("fedhttp: reaching %s: %w", name, err)
		}
	}
	c, err := gostream.Dial(ctx, t.h, id, Protocol)
	if err != nil {
		return nil, fmt.Errorf("fedhttp: opening a stream to %s: %w", name, err)
	}
	return c, nil
}
