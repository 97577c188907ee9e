//go:build js

package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"

	"hearth/node"
	"hearth/node/roomserver"
	"hearth/node/storage"
	"hearth/p2p/fedhttp"
	"hearth/p2p/host"
	"hearth/p2p/identity"
	"hearth/wasm/opfs"
)

// browserNode is the node this worker runs. It starts in stages, each
// answering more as soon as it can (see start): the identity (server name,
// /_matrix/client/versions and /_hearth/v1/status), then storage and the
// node (the whole client API), then libp2p, which connects in the
// background while clients already use the node.
type browserNode struct {
	log *slog.Logger

	mu       sync.Mutex
	begun    bool
	id       *identity.Identity // set once the identity is known
	early    http.Handler       // answers versions before storage is open
	ready    chan struct{}      // closed once the node serves (or failed to start)
	startErr error
	n        *node.Node
	h        *host.Host
	hostErr  error
	// persistent: storage is OPFS (false: memdb, gone with the tab).
	persistent bool
	boot       bootTimes
	fed        *fedActivity
	checks     *poolChecker // nil without a pool of check workers
	// p2p is closed when the libp2p host is up (or failed to start): the
	// node's federation transport waits for it.
	p2p chan struct{}
}

// bootTimes is how long each stage of start took, in milliseconds: the
// browser tests print them, and the page shows where its wait went.
type bootTimes struct {
	Identity float64 `json:"identity_ms"` // the key from the seed, server name
	Storage  float64 `json:"storage_ms"`  // OPFS probe, SQLite open, migrations, the node's components
	P2P      float64 `json:"p2p_ms"`      // the libp2p host (connecting goes on after)
}

type startArgs struct {
	Seed      string   `json:"seed"` // hex, 32 bytes
	Bootstrap []string `json:"bootstrap"`
	Relays    []string `json:"relays"`
}

func newBrowserNode(log *slog.Logger) *browserNode {
	return &browserNode{log: log, ready: make(chan struct{}), p2p: make(chan struct{}), fed: newFedActivity(), checks: newPoolChecker()}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// start takes the node's identity and returns as soon as the node answers
// /_matrix/client/versions and /_hearth/v1/status with it; storage, the
// node and libp2p start on in the background (ready tells when the node
// serves everything). Later calls start nothing and return the status.
func (b *browserNode) start(raw []byte) (any, error) {
	b.mu.Lock()
	if b.begun {
		b.mu.Unlock()
		return b.status()
	}
	b.begun = true
	b.mu.Unlock()

	var args startArgs
	fail := func(err error) (any, error) {
		b.finish(err)
		return nil, err
	}
	if err := json.Unmarshal(raw, &args); err != nil {
		return fail(fmt.Errorf("start: bad arguments: %w", err))
	}
	seed, err := hex.DecodeString(args.Seed)
	if err != nil || len(seed) != ed25519.SeedSize {
		return fail(fmt.Errorf("start: the identity seed must be %d bytes of hex", ed25519.SeedSize))
	}
	boot, err := multiaddrs(args.Bootstrap)
	if err != nil {
		return fail(err)
	}
	relays, err := multiaddrs(args.Relays)
	if err != nil {
		return fail(err)
	}
	t0 := time.Now()
	id, err := identity.New(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		return fail(fmt.Errorf("start: identity: %w", err))
	}
	b.mu.Lock()
	b.id, b.early = id, earlyAPI(id.ServerName)
	b.boot.Identity = ms(time.Since(t0))
	b.mu.Unlock()
	go b.startNode(id, boot, relays)
	return b.status()
}

// startNode opens storage and starts the node, then the libp2p host.
func (b *browserNode) startNode(id *identity.Identity, boot, relays []ma.Multiaddr) {
	t0 := time.Now()
	// OPFS with one exclusive connection (no shared memory for WAL in
	// js/wasm); without OPFS, memdb, not persistent, shared so that
	// SQLite keeps its in-memory journal.
	db := storage.Options{Path: "/hearth.db", VFS: opfs.Name, Exclusive: true}
	persistent := opfs.Available()
	if !persistent {
		db = storage.Options{Path: "/hearth.db", VFS: "memdb"}
		b.log.Warn("OPFS is not available: this node is NOT persistent")
	}
	// Signatures are checked by WebCrypto where it has Ed25519; waiting
	// on it, many events are verified at once.
	verifier, verifyWidth := newVerifier(identity.KeyID, identity.PublicKeyOf, b.log)
	// Large batches of received events are checked by the check workers.
	var checker roomserver.Checker
	if b.checks != nil {
		checker = b.checks
	}
	n, err := node.New(node.Config{
		ServerName:       id.ServerName,
		KeyID:            identity.KeyID,
		PrivateKey:       id.Private,
		KeyOf:            identity.PublicKeyOf,
		Verifier:         verifier,
		VerifyWidth:      verifyWidth,
		Checker:          checker,
		DB:               db,
		OpenRegistration: true, // only this origin's pages reach the handler
		// Federation waits for the libp2p host, which starts after the
		// node: clients get their node first.
		Transport: b.fed.wrap(roundTripFunc(b.roundTrip)),
		RemotePeer: func(r *http.Request) (string, bool) {
			name := fedhttp.RemoteServerName(r)
			return name, name != ""
		},
		Logger: b.log,
	})
	if err != nil {
		b.finish(fmt.Errorf("start node: %w", err))
		close(b.p2p)
		return
	}
	b.mu.Lock()
	b.n, b.persistent = n, persistent
	b.boot.Storage = ms(time.Since(t0))
	b.mu.Unlock()
	b.finish(nil)
	b.log.Info("browser node serving", "server_name", id.ServerName, "persistent", persistent,
		"identity_ms", b.boot.Identity, "storage_ms", b.boot.Storage)
	b.startP2P(n, id, boot, relays)
}

// finish ends the storage stage: requests waiting for the node go on.
func (b *browserNode) finish(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.startErr = err
	select {
	case <-b.ready:
	default:
		close(b.ready)
	}
}

// startP2P starts the libp2p host (it dials its bootstrap peers and
// relays in the background) and serves federation on it.
func (b *browserNode) startP2P(n *node.Node, id *identity.Identity, boot, relays []ma.Multiaddr) {
	defer close(b.p2p)
	t0 := time.Now()
	h, err := host.New(context.Background(), host.Options{Identity: id, Bootstrap: boot, Relays: relays, Logger: b.log})
	if err == nil {
		if err = h.Serve(n.FederationHandler()); err != nil {
			h.Close()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.boot.P2P = ms(time.Since(t0))
	if err != nil {
		b.hostErr = fmt.Errorf("start libp2p: %w", err)
		b.log.Error("libp2p did not start: this node does not federate", "err", err)
		return
	}
	// Queued federation traffic for a peer goes as soon as it connects.
	h.LibP2P().Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			go n.PeerOnline(fedhttp.ServerNameOf(c.RemotePeer()))
		},
	})
	b.h = h
}

// roundTrip carries the node's federation requests once libp2p is up.
func (b *browserNode) roundTrip(r *http.Request) (*http.Response, error) {
	select {
	case <-b.p2p:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	b.mu.Lock()
	h, err := b.h, b.hostErr
	b.mu.Unlock()
	if h == nil {
		return nil, err
	}
	return h.RoundTripper().RoundTrip(r)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func multiaddrs(ss []string) ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, 0, len(ss))
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("multiaddr %q: %w", s, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// running waits until the node serves and returns it.
func (b *browserNode) running(ctx context.Context) (*node.Node, error) {
	b.mu.Lock()
	begun := b.begun
	b.mu.Unlock()
	if !begun {
		return nil, errors.New("the node is not started")
	}
	select {
	case <-b.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n, b.startErr
}

// waitReady waits until the node serves, and returns its status.
func (b *browserNode) waitReady() (any, error) {
	if _, err := b.running(context.Background()); err != nil {
		return nil, err
	}
	return b.status()
}
