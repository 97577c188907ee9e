//go:build js

package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	ma "github.com/multiformats/go-multiaddr"

	"hearth/p2p/fedhttp"
	"hearth/p2p/host"
	"hearth/p2p/identity"
)

var p2p struct {
	mu sync.Mutex
	h  *host.Host
}

func theHost() (*host.Host, error) {
	p2p.mu.Lock()
	defer p2p.mu.Unlock()
	if p2p.h == nil {
		return nil, errors.New("the libp2p host is not started")
	}
	return p2p.h, nil
}

// versionHandler answers the federation version request with the
// authenticated caller's server name, as cmd/p2p-node does.
func versionHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/federation/v1/version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"server":             map[string]string{"name": "hearth-probe", "version": "0"},
			"remote_server_name": fedhttp.RemoteServerName(r),
		})
	})
	return mux
}

// p2pStart starts the browser host with the given relays (also kept as
// bootstrap peers), serves the version handler, and waits until the host
// holds a reservation on every relay.
func p2pStart(raw json.RawMessage) (any, error) {
	var args struct {
		Relays []string `json:"relays"`
		WaitMS int      `json:"wait_ms"`
	}
	if err := decode(raw, &args); err != nil {
		return nil, err
	}
	var relays []ma.Multiaddr
	for _, s := range args.Relays {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("relay %q: %w", s, err)
		}
		relays = append(relays, a)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	id, err := identity.New(priv)
	if err != nil {
		return nil, err
	}
	p2p.mu.Lock()
	defer p2p.mu.Unlock()
	if p2p.h != nil {
		return nil, errors.New("the libp2p host is already started")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := host.New(ctx, host.Options{Identity: id, Bootstrap: relays, Relays: relays, Logger: logger})
	if err != nil {
		return nil, err
	}
	if err := h.Serve(versionHandler()); err != nil {
		h.Close()
		return nil, err
	}
	p2p.h = h
	wait := time.Duration(max(args.WaitMS, 1000)) * time.Millisecond
	deadline := time.Now().Add(wait)
	for circuits(h) < len(relays) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no reservation on every relay within %s; addresses %v", wait, h.Addrs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return map[string]any{
		"server_name": h.ServerName(), "peer_id": h.ID().String(), "addrs": h.Addrs(),
		"reserved_ms": ms(time.Since(start)),
	}, nil
}

// circuits counts the relays we hold a reservation with.
func circuits(h *host.Host) int {
	seen := map[string]bool{}
	for _, a := range h.Addrs() {
		s := a.String()
		if i := strings.Index(s, "/p2p-circuit"); i >= 0 {
			seen[s[:i]] = true
		}
	}
	return len(seen)
}

// p2pGet reaches the server called name (finding it by name alone), asks
// for its version once through gomatrixserverlib's client and n more times
// through a plain http.Client, and reports the round-trip times.
func p2pGet(raw json.RawMessage) (any, error) {
	var args struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	if err := decode(raw, &args); err != nil {
		return nil, err
	}
	h, err := theHost()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	start := time.Now()
	fc := fclient.NewClient(fclient.WithTransport(h.RoundTripper()), fclient.WithTimeout(30*time.Second))
	v, err := fc.GetVersion(ctx, spec.ServerName(args.Name))
	if err != nil {
		return nil, fmt.Errorf("fclient GetVersion of %s: %w", args.Name, err)
	}
	first := time.Since(start)

	client := &http.Client{Transport: h.RoundTripper(), Timeout: 30 * time.Second}
	var remote string
	rtts := make([]time.Duration, 0, args.N)
	for range args.N {
		t0 := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "matrix://"+args.Name+"/_matrix/federation/v1/version", nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		rtts = append(rtts, time.Since(t0))
		var body struct {
			Remote string `json:"remote_server_name"`
		}
		if err := json.Unmarshal(b, &body); err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("answer %d %q: %v", resp.StatusCode, b, err)
		}
		remote = body.Remote
	}
	slices.Sort(rtts)
	pct := func(p float64) float64 {
		if len(rtts) == 0 {
			return 0
		}
		return ms(rtts[min(len(rtts)-1, int(p*float64(len(rtts))))])
	}
	var via []string
	for _, c := range h.LibP2P().Network().ConnsToPeer(mustPeer(args.Name)) {
		via = append(via, c.RemoteMultiaddr().String())
	}
	return map[string]any{
		"server": v.Server.Name, "remote_server_name": remote, "first_ms": ms(first),
		"n": args.N, "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99),
		"min_ms": pct(0), "via": via,
	}, nil
}

// mustPeer is the peer ID of a server name already reached (so valid).
func mustPeer(name string) peer.ID {
	p, _ := identity.PeerIDOf(name)
	return p
}

func p2pPeers(json.RawMessage) (any, error) {
	h, err := theHost()
	if err != nil {
		return nil, err
	}
	return map[string]any{"server_name": h.ServerName(), "addrs": h.Addrs(), "peers": h.Peers()}, nil
}
