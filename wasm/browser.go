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
	"net/http/httptest"
	"sync"
	"syscall/js"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"

	"hearth/node"
	"hearth/node/httputil"
	"hearth/node/storage"
	"hearth/p2p/fedhttp"
	"hearth/p2p/host"
	"hearth/p2p/identity"
	"hearth/wasm/opfs"
)

// browserNode is the node this worker runs, once started.
type browserNode struct {
	log *slog.Logger

	mu         sync.Mutex
	started    chan struct{} // closed when start has finished (either way)
	startErr   error
	n          *node.Node
	h          *host.Host
	persistent bool
	bootMS     float64
}

type startArgs struct {
	Seed      string   `json:"seed"` // hex, 32 bytes
	Bootstrap []string `json:"bootstrap"`
	Relays    []string `json:"relays"`
}

// start opens storage, starts the libp2p host and the node. A second call
// waits for the first and returns its outcome.
func (b *browserNode) start(raw []byte) (any, error) {
	b.mu.Lock()
	if b.started != nil {
		ch := b.started
		b.mu.Unlock()
		<-ch
		if b.startErr != nil {
			return nil, b.startErr
		}
		return b.status()
	}
	b.started = make(chan struct{})
	b.mu.Unlock()
	t0 := time.Now()
	err := b.doStart(raw)
	b.mu.Lock()
	b.startErr = err
	b.bootMS = float64(time.Since(t0).Microseconds()) / 1000
	close(b.started)
	b.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return b.status()
}

func (b *browserNode) doStart(raw []byte) error {
	var args startArgs
	if err := json.Unmarshal(raw, &args); err != nil {
		return fmt.Errorf("start: bad arguments: %w", err)
	}
	seed, err := hex.DecodeString(args.Seed)
	if err != nil || len(seed) != ed25519.SeedSize {
		return fmt.Errorf("start: the identity seed must be %d bytes of hex", ed25519.SeedSize)
	}
	id, err := identity.New(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		return fmt.Errorf("start: identity: %w", err)
	}
	boot, err := multiaddrs(args.Bootstrap)
	if err != nil {
		return err
	}
	relays, err := multiaddrs(args.Relays)
	if err != nil {
		return err
	}

	// OPFS with one exclusive connection (no shared memory for WAL in
	// js/wasm); without OPFS, memdb, not persistent, shared so that
	// SQLite keeps its in-memory journal.
	db := storage.Options{Path: "/hearth.db", VFS: opfs.Name, Exclusive: true}
	persistent := opfs.Available()
	if !persistent {
		db = storage.Options{Path: "/hearth.db", VFS: "memdb"}
		b.log.Warn("OPFS is not available: this node is NOT persistent")
	}

	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := host.New(ctx, host.Options{Identity: id, Bootstrap: boot, Relays: relays, Logger: b.log})
	if err != nil {
		return fmt.Errorf("start libp2p: %w", err)
	}
	tHost := time.Since(t0)
	n, err := node.New(node.Config{
		ServerName:       id.ServerName,
		KeyID:            identity.KeyID,
		PrivateKey:       id.Private,
		KeyOf:            identity.PublicKeyOf,
		DB:               db,
		OpenRegistration: true, // only this origin's pages reach the handler
		Transport:        h.RoundTripper(),
		RemotePeer: func(r *http.Request) (string, bool) {
			name := fedhttp.RemoteServerName(r)
			return name, name != ""
		},
		Logger: b.log,
	})
	if err != nil {
		h.Close()
		return fmt.Errorf("start node: %w", err)
	}
	tNode := time.Since(t0) - tHost
	if err := h.Serve(n.FederationHandler()); err != nil {
		n.Close()
		h.Close()
		return fmt.Errorf("serve federation: %w", err)
	}
	// Queued federation traffic for a peer goes as soon as it connects.
	h.LibP2P().Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			go n.PeerOnline(fedhttp.ServerNameOf(c.RemotePeer()))
		},
	})
	b.mu.Lock()
	b.n, b.h, b.persistent = n, h, persistent
	b.mu.Unlock()
	b.log.Info("browser node started", "server_name", id.ServerName, "persistent", persistent,
		"host", tHost.Round(time.Millisecond), "node", tNode.Round(time.Millisecond))
	return nil
}

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

// running waits for start and returns the node and host.
func (b *browserNode) running() (*node.Node, *host.Host, error) {
	b.mu.Lock()
	ch := b.started
	b.mu.Unlock()
	if ch == nil {
		return nil, nil, errors.New("the node is not started")
	}
	<-ch
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n, b.h, b.startErr
}

// Status is the browser node's answer to /_hearth/v1/status: the native
// node's fields (DESIGN.md, "Contracts") plus whether storage persists.
type Status struct {
	ServerName string          `json:"server_name"`
	PeerID     string          `json:"peer_id"`
	Addrs      []string        `json:"addrs"`
	Peers      []host.PeerInfo `json:"peers"`
	Persistent bool            `json:"persistent"`
	BootMS     float64         `json:"boot_ms"`
	// OPFS is the storage VFS's work so far: its share of the time tells
	// the cost of the browser's file system from SQLite's and ours.
	OPFS opfs.Stats `json:"opfs"`
}

func (b *browserNode) status() (any, error) {
	_, h, err := b.running()
	if err != nil {
		return nil, err
	}
	st := Status{ServerName: h.ServerName(), PeerID: h.ID().String(), Addrs: []string{}, Peers: h.Peers()}
	for _, a := range h.Addrs() {
		st.Addrs = append(st.Addrs, a.String())
	}
	if st.Peers == nil {
		st.Peers = []host.PeerInfo{}
	}
	b.mu.Lock()
	st.Persistent, st.BootMS = b.persistent, b.bootMS
	b.mu.Unlock()
	st.OPFS = opfs.ReadStats()
	return st, nil
}

// serve answers one request from the page: /_hearth/v1/status here, the
// rest through the node's client API. It waits for the node to start.
func (b *browserNode) serve(req *http.Request) (js.Value, error) {
	n, _, err := b.running()
	rec := httptest.NewRecorder()
	switch {
	case err != nil:
		httputil.WriteError(rec, req, httputil.Errf(http.StatusServiceUnavailable, "M_UNKNOWN", "the browser node did not start: "+err.Error()))
	case req.URL.Path == "/_hearth/v1/status":
		st, err := b.status()
		if err != nil {
			return js.Undefined(), err
		}
		httputil.WriteJSON(rec, http.StatusOK, st)
	default:
		cors(n.Handler()).ServeHTTP(rec, req)
	}
	return responseToJS(rec), nil
}

// cors answers preflights and labels answers as the native node does, so
// Matrix clients in the page see the same API either way.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
