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
	"hearth/p2p/identity"
	"hearth/web"
)

// started is taken as early as Go lets us, to report start-up time.
var started = time.Now()

func main() {
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
	if err := run(ctx, opts, log); err != nil {
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
	id, err := identity.LoadOrCreate(opts.Data)
	if err != nil {
		return fmt.Errorf("load identity: %w", err)
	}
	h, err := startP2P(ctx, id, opts, log)
	if err != nil {
		return fmt.Errorf("start libp2p: %w", err)
	}
	// Closed after the node (deferred first, runs last): the node's
	// outbound queues stop before the transport goes.
	defer h.Close()
	opening := time.Now()
	n, err := node.New(node.Config{
		ServerName:       id.ServerName,
		KeyID:            identity.KeyID,
		PrivateKey:       id.Private,
		KeyOf:            identity.PublicKeyOf,
		DB:               storage.Options{Path: filepath.Join(opts.Data, "hearth.db")},
		OpenRegistration: !opts.NoRegistration,
		RegistrationFrom: fromLoopback,
		Transport:        h.RoundTripper(),
		RemotePeer:       remotePeer,
		Logger:           log,
	})
	if err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	nodeOpen := time.Since(opening)
	defer func() {
		if err := n.Close(); err != nil {
			log.Error("close node", "err", err)
		}
	}()
	if err := h.Serve(n.FederationHandler()); err != nil {
		return fmt.Errorf("serve federation: %w", err)
	}
	onConnect(h, n.PeerOnline)

	ln, err := net.Listen("tcp", opts.HTTP)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", opts.HTTP, err)
	}
	// Requests' contexts derive from base, so cancelling it ends long polls.
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := &http.Server{
		Handler: routes{
			Matrix:       n.Handler(),
			Status:       func() Status { return status(h) },
			Web:          web.FS(),
			PublicStatus: opts.PublicStatus,
		}.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "server_name", id.ServerName, "p2p", strs(h.Addrs()),
		"peer_id", id.PeerID.String(), "data", opts.Data, "registration", !opts.NoRegistration,
		"startup", time.Since(started).Round(10*time.Microsecond), "node_open", nodeOpen.Round(10*time.Microsecond))

	select {
	case err := <-served:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	return shutdown(srv, cancelBase, log)
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
