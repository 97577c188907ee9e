// Command hearth is the native Hearth node: it parses flags, loads the
// node's key, opens the node on a SQLite file in the data directory and
// serves the Client-Server API, the node's status and the embedded web app
// over HTTP until SIGINT or SIGTERM.
//
// It is the one place that wires platform choices (files, sockets, signals)
// into the core; node/ must never import it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"hearth/node"
	"hearth/node/storage"
	"hearth/p2p/host"
	"hearth/p2p/identity"
	"hearth/web"
)

// started is taken as early as Go lets us, to report start-up time.
var started = time.Now()

func main() {
	if len(os.Args) > 1 && os.Args[1] == "demo" {
		os.Exit(demoMain(os.Args[2:]))
	}
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hearth:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: opts.LogLevel}))
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// After the first signal, restore the default so a second one kills
	// a shutdown that hangs.
	go func() { <-ctx.Done(); stop() }()
	stopProfile := startProfile()
	err = run(ctx, opts, log)
	stopProfile()
	if err != nil {
		log.Error("hearth stopped", "err", err)
		os.Exit(1)
	}
}

// How long shutdown lets requests finish: in-flight requests get
// requestGrace before their contexts are cancelled (which ends /sync long
// polls), and the whole shutdown gets shutdownTimeout.
const (
	requestGrace    = 1 * time.Second
	shutdownTimeout = 10 * time.Second
)

// run starts the node and serves until ctx is done.
func run(ctx context.Context, opts *options, log *slog.Logger) error {
	p, err := startPeer(ctx, opts, log)
	if err != nil {
		return err
	}
	defer p.close(log)
	log.Info("listening", "addr", p.addr, "server_name", p.id.ServerName, "p2p", strs(p.host.Addrs()),
		"peer_id", p.id.PeerID.String(), "data", opts.Data, "registration", !opts.NoRegistration,
		"startup", time.Since(started).Round(10*time.Microsecond), "node_open", p.nodeOpen.Round(10*time.Microsecond))
	select {
	case err := <-p.served:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	return shutdown(p.srv, p.cancelBase, log)
}

// peer is one running node: its libp2p host, the node, and its HTTP server.
type peer struct {
	id         *identity.Identity
	host       *host.Host
	node       *node.Node
	srv        *http.Server
	addr       string // the HTTP listener's address
	served     chan error
	cancelBase context.CancelFunc
	nodeOpen   time.Duration
}

// startPeer starts a node as opts say: libp2p first (the node sends through
// it), then the node, then the HTTP listener.
func startPeer(ctx context.Context, opts *options, log *slog.Logger) (_ *peer, err error) {
	p := &peer{}
	if p.id, err = identity.LoadOrCreate(opts.Data); err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	if p.host, err = startP2P(ctx, p.id, opts, log); err != nil {
		return nil, fmt.Errorf("start libp2p: %w", err)
	}
	defer func() {
		if err != nil {
			p.close(log)
		}
	}()
	opening := time.Now()
	p.node, err = node.New(node.Config{
		ServerName:       p.id.ServerName,
		KeyID:            identity.KeyID,
		PrivateKey:       p.id.Private,
		KeyOf:            identity.PublicKeyOf,
		DB:               storage.Options{Path: filepath.Join(opts.Data, "hearth.db")},
		OpenRegistration: !opts.NoRegistration,
		RegistrationFrom: fromLoopback,
		Transport:        p.host.RoundTripper(),
		RemotePeer:       remotePeer,
		Logger:           log,
	})
	if err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	p.nodeOpen = time.Since(opening)
	if err := p.host.Serve(p.node.FederationHandler()); err != nil {
		return nil, fmt.Errorf("serve federation: %w", err)
	}
	onConnect(p.host, p.node.PeerOnline)

	ln, err := net.Listen("tcp", opts.HTTP)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", opts.HTTP, err)
	}
	p.addr = ln.Addr().String()
	// Requests' contexts derive from base, so cancelling it ends long polls.
	base, cancelBase := context.WithCancel(context.Background())
	p.cancelBase = cancelBase
	p.srv = &http.Server{
		Handler: routes{
			Matrix:       p.node.Handler(),
			Status:       func() Status { return status(p.host) },
			Web:          web.FS(),
			PublicStatus: opts.PublicStatus,
		}.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	p.served = make(chan error, 1)
	go func() { p.served <- p.srv.Serve(ln) }()
	return p, nil
}

// close stops the node, then its libp2p host (so the node's outbound
// queues stop before the transport goes).
func (p *peer) close(log *slog.Logger) {
	if p.cancelBase != nil {
		p.cancelBase()
	}
	if p.node != nil {
		if err := p.node.Close(); err != nil {
			log.Error("close node", "err", err)
		}
	}
	if p.host != nil {
		p.host.Close()
	}
}

// shutdown stops accepting requests, lets in-flight ones finish for a short
// grace, then cancels the rest and finally closes what is left.
func shutdown(srv *http.Server, cancelBase context.CancelFunc, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(requestGrace):
		cancelBase()
		err = <-done
	}
	if err != nil {
		log.Warn("requests still open at shutdown; closing them", "err", err)
		if cerr := srv.Close(); cerr != nil {
			return fmt.Errorf("close http: %w", cerr)
		}
	}
	return nil
}
