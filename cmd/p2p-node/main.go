// Command p2p-node runs a bare Hearth libp2p host (no homeserver) for
// interop tests and network experiments: it prints one JSON line with its
// server name, peer ID and addresses, answers
// GET /_matrix/federation/v1/version over libp2p streams with the
// authenticated caller's identity, and runs until SIGINT/SIGTERM (or until
// stdin closes, with --exit-on-eof, so a test harness that dies takes it
// along). It is a development tool; bin/hearth is the product.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"hearth/p2p/fedhttp"
	"hearth/p2p/host"
	"hearth/p2p/identity"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "p2p-node:", err)
		os.Exit(1)
	}
}

func run() error {
	var opts host.Options
	var listen, bootstrap, relays host.MultiaddrsFlag
	flag.Var(&listen, "listen", "multiaddr to listen on (repeatable), e.g. /ip4/127.0.0.1/tcp/0/ws")
	flag.Var(&bootstrap, "bootstrap", "bootstrap peer multiaddr ending in /p2p/ID (repeatable)")
	flag.Var(&relays, "relay", "relay to hold a reservation with (repeatable)")
	flag.BoolVar(&opts.MDNS, "mdns", false, "discover LAN peers with mDNS")
	flag.BoolVar(&opts.DHT, "dht", false, "run the Kademlia DHT")
	flag.BoolVar(&opts.RelayService, "relay-service", false, "offer circuit relay v2")
	data := flag.String("data", "", "directory holding node.key (default: a new key each run)")
	exitOnEOF := flag.Bool("exit-on-eof", false, "exit when stdin closes")
	verbose := flag.Bool("v", false, "log to stderr")
	flag.Parse()
	opts.Listen, opts.Bootstrap, opts.Relays = listen, bootstrap, relays

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	var err error
	if *data != "" {
		opts.Identity, err = identity.LoadOrCreate(*data)
	} else {
		opts.Identity, err = freshIdentity()
	}
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	h, err := host.New(startCtx, opts)
	cancel()
	if err != nil {
		return err
	}
	defer h.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/federation/v1/version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"server":             map[string]string{"name": "hearth-p2p-node", "version": "0"},
			"remote_server_name": fedhttp.RemoteServerName(r),
			"remote_peer_id":     fedhttp.RemotePeer(r).String(),
		})
	})
	if err := h.Serve(mux); err != nil {
		return err
	}

	if err := json.NewEncoder(os.Stdout).Encode(map[string]any{
		"server_name": h.ServerName(),
		"peer_id":     h.ID().String(),
		"addrs":       h.Addrs(),
	}); err != nil {
		return err
	}

	if *exitOnEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop()
		}()
	}
	<-ctx.Done()
	return nil
}

// freshIdentity is a throwaway key for a run without --data.
func freshIdentity() (*identity.Identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return identity.New(priv)
}
