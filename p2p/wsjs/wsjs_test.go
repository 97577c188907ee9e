//go:build !js

package wsjs_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	lphost "github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"

	"hearth/p2p/fedhttp"
	"hearth/p2p/host"
	"hearth/p2p/identity"
	"hearth/p2p/peerrecord"
	"hearth/p2p/resolve"
	"hearth/p2p/wsjs"
)

func newIdentity(t *testing.T) *identity.Identity {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.New(priv)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// nativeRelay is a native Hearth host listening on loopback WebSocket with
// the relay service, as bin/hearth runs it for browsers.
func nativeRelay(t *testing.T) (*host.Host, ma.Multiaddr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := host.New(ctx, host.Options{
		Identity:     newIdentity(t),
		Listen:       []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0/ws")},
		RelayService: true,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	for _, a := range h.Addrs() {
		if strings.Contains(a.String(), "/ws/") {
			return h, a
		}
	}
	t.Fatalf("relay has no WebSocket address in %v", h.Addrs())
	return nil, nil
}

func browserHost(t *testing.T, id *identity.Identity) lphost.Host {
	t.Helper()
	h, err := wsjs.NewHost(wsjs.HostOptions{Key: id.LibP2PKey(), UserAgent: "hearth-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	if len(h.Addrs()) != 0 {
		t.Fatalf("a dial-only host announces %v", h.Addrs())
	}
	return h
}

func connect(t *testing.T, h lphost.Host, full ma.Multiaddr) peer.ID {
	t.Helper()
	ai, err := peer.AddrInfoFromP2pAddr(full)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Connect(ctx, *ai); err != nil {
		t.Fatalf("connecting to %s: %v", full, err)
	}
	return ai.ID
}

func TestDialNativeOverWebSocket(t *testing.T) {
	relay, addr := nativeRelay(t)
	b := browserHost(t, newIdentity(t))
	rid := connect(t, b, addr)

	conns := b.Network().ConnsToPeer(rid)
	if len(conns) != 1 {
		t.Fatalf("%d connections to the relay, want 1", len(conns))
	}
	if got := conns[0].ConnState().Transport; got != "websocket" {
		t.Errorf("transport %q, want websocket", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := <-ping.Ping(ctx, b, rid)
	if res.Error != nil {
		t.Fatalf("ping: %v", res.Error)
	}
	// The relay's identify ran against us: it knows our key and protocols.
	deadline := time.Now().Add(10 * time.Second)
	for {
		protos, _ := relay.LibP2P().Peerstore().GetProtocols(b.ID())
		if len(protos) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the relay never identified the browser host")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDialByDNSName(t *testing.T) {
	_, addr := nativeRelay(t)
	byName := ma.StringCast(strings.Replace(addr.String(), "/ip4/127.0.0.1/", "/dns4/localhost/", 1))
	if byName.Equal(addr) {
		t.Fatalf("relay address %s is not on 127.0.0.1", addr)
	}
	b := browserHost(t, newIdentity(t))
	rid := connect(t, b, byName)
	if got := b.Network().ConnsToPeer(rid)[0].RemoteMultiaddr(); !strings.HasPrefix(got.String(), "/dns4/localhost/") {
		t.Errorf("connected at %s, want the name as dialled", got)
	}
}

// TestRelayedFederationHTTP is the browser path end to end, natively: two
// dial-only hosts, one holding a reservation on a native relay and
// publishing its signed record there, the other reaching it by server name
// alone and sending federation HTTP over the relayed stream.
func TestRelayedFederationHTTP(t *testing.T) {
	relay, addr := nativeRelay(t)
	aID := newIdentity(t)
	a := browserHost(t, aID)
	b := browserHost(t, newIdentity(t))
	rid := connect(t, a, addr)
	connect(t, b, addr)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rsv, err := client.Reserve(ctx, a, peer.AddrInfo{ID: rid, Addrs: []ma.Multiaddr{addr}})
	if err != nil {
		t.Fatalf("reserve: %v", err)
	}
	circuit := addr.Encapsulate(ma.StringCast("/p2p-circuit"))
	raw, err := peerrecord.Seal(peer.AddrInfo{ID: a.ID(), Addrs: []ma.Multiaddr{circuit}}, aID.LibP2PKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := peerrecord.Publish(ctx, a, peerrecord.DefaultProtocol, rid, raw); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if _, ok := relay.Records().Get(a.ID()); !ok {
		t.Fatal("the relay does not hold a's record")
	}
	t.Logf("reservation expires %s, limits %d bytes / %s", rsv.Expiration, rsv.LimitData, rsv.LimitDuration)

	srv, err := fedhttp.Serve(a, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"path": r.URL.Path, "from": fedhttp.RemoteServerName(r)})
	}), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())

	rt := fedhttp.NewTransport(b, resolve.New(b, peerrecord.DefaultProtocol, nil, slog.New(slog.DiscardHandler)))
	defer rt.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "matrix://"+aID.ServerName+"/_matrix/federation/v1/version", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET through the relay: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got map[string]string
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%d %s: %v", resp.StatusCode, body, err)
	}
	if got["path"] != "/_matrix/federation/v1/version" || got["from"] != identity.NameOf(b.ID()) {
		t.Fatalf("answer %v, want the path and b's server name", got)
	}
	conns := b.Network().ConnsToPeer(a.ID())
	if len(conns) == 0 {
		t.Fatal("b holds no connection to a")
	}
	for _, c := range conns {
		if !strings.Contains(c.RemoteMultiaddr().String(), "/p2p-circuit") {
			t.Errorf("b reached a at %s, not through the relay", c.RemoteMultiaddr())
		}
	}
}

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"/ip4/127.0.0.1/tcp/4002/ws":                  "ws://127.0.0.1:4002/",
		"/ip6/::1/tcp/4002/ws":                        "ws://[::1]:4002/",
		"/dns4/example.org/tcp/443/wss":               "wss://example.org:443/",
		"/dns/example.org/tcp/443/tls/ws":             "wss://example.org:443/",
		"/ip4/1.2.3.4/tcp/443/tls/sni/example.org/ws": "wss://example.org:443/",
		"/ip4/127.0.0.1/tcp/4002/ws/p2p/12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq": "ws://127.0.0.1:4002/",
	} {
		got, err := wsjs.URL(ma.StringCast(in))
		if err != nil || got != want {
			t.Errorf("URL(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	tpt := wsjs.New(nil, nil)
	for _, in := range []string{
		"/ip4/127.0.0.1/tcp/4001",
		"/ip4/127.0.0.1/udp/4001/quic-v1",
		"/ip4/127.0.0.1/tcp/4002/ws/p2p/12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq/p2p-circuit",
		"/ip4/127.0.0.1/tcp/4002/ws/webrtc",
	} {
		if tpt.CanDial(ma.StringCast(in)) {
			t.Errorf("CanDial(%s) = true", in)
		}
	}
	if _, err := tpt.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0/ws")); err == nil {
		t.Error("Listen succeeded")
	}
}
