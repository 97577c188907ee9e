// Package fedhttp carries the Matrix Server-Server API as HTTP/1.1 over
// libp2p streams: a server that serves an http.Handler on the "/http/1.1"
// stream protocol (the one go-libp2p's p2p/http speaks) with the
// authenticated remote peer in each request's context, and an
// http.RoundTripper that sends matrix://<server name>/... requests to the
// peer that name denotes.
//
// It builds for js/wasm (the browser node uses it as is). It must not import
// node/; callers hand it a core host.Host and, for the client, a Connector
// that knows how to reach a peer.
package fedhttp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	ic "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/gostream"

	"hearth/p2p/identity"
)

// Protocol is the stream protocol HTTP/1.1 runs over. It is go-libp2p's
// p2p/http protocol ID, so either side interoperates with that package.
const Protocol = "/http/1.1"

type remotePeerKey struct{}

// RemotePeer is the authenticated libp2p peer that sent r, or "" if r did
// not arrive over a libp2p stream.
func RemotePeer(r *http.Request) peer.ID {
	id, _ := r.Context().Value(remotePeerKey{}).(peer.ID)
	return id
}

// RemoteServerName is the Matrix server name of the authenticated peer that
// sent r: the canonical name of its ed25519 key. It is "" if r did not come
// over a libp2p stream or the peer's key is not ed25519 (no Hearth node).
// Federation handlers require the X-Matrix origin to equal it.
func RemoteServerName(r *http.Request) string {
	return ServerNameOf(RemotePeer(r))
}

// ServerNameOf is the server name of a peer, or "" for a peer whose key is
// not an inlined ed25519 key and so cannot be a Hearth server.
func ServerNameOf(id peer.ID) string {
	if id == "" {
		return ""
	}
	pk, err := id.ExtractPublicKey()
	if err != nil || pk.Type() != ic.Ed25519 {
		return ""
	}
	return identity.NameOf(id)
}

// Server serves an http.Handler to libp2p peers.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Serve starts serving handler on h at "/" of the stream protocol, so
// /_matrix/federation/... paths reach the handler intact.
//
// It runs its own http.Server over go-libp2p's gostream listener rather than
// p2p/http's Host.Serve: that one forces "Connection: close" (one stream per
// request) and sets no timeouts, while federation traffic benefits from
// keep-alive and a server facing the network needs header and idle timeouts.
func Serve(h host.Host, handler http.Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	// IgnoreEOF as in p2p/http: a client that half-closes its side after
	// the request (go-libp2p's p2p/http client does) must not cancel the
	// handler's context.
	ln, err := gostream.Listen(h, Protocol, gostream.IgnoreEOF())
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, srv: &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			// gostream names the remote end by its peer ID, which the
			// connection's security handshake (noise) authenticated.
			if c.RemoteAddr().Network() != gostream.Network {
				return ctx
			}
			id, err := peer.Decode(c.RemoteAddr().String())
			if err != nil {
				return ctx
			}
			return context.WithValue(ctx, remotePeerKey{}, id)
		},
	}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, context.Canceled) {
			log.Warn("fedhttp: server stopped", "err", err)
		}
	}()
	return s, nil
}

// Close stops accepting streams and waits (within ctx) for requests in
// flight to finish.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	_ = s.ln.Close()
	return err
}
