//go:build !js

package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	ma "github.com/multiformats/go-multiaddr"

	"hearth/p2p/fedhttp"
	"hearth/p2p/identity"
)

// echoHandler answers with what the federation layer needs to see: the
// path as received and the authenticated remote server name.
func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"path":   r.URL.Path,
			"query":  r.URL.RawQuery,
			"method": r.Method,
			"remote": fedhttp.RemoteServerName(r),
			"body":   string(body),
		})
	})
}

func getJSON(t *testing.T, rt http.RoundTripper, method, url, body string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: status %d", method, url, resp.StatusCode)
	}
	var out map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBootstrapConnectsBothWays(t *testing.T) {
	a := startHost(t, Options{Listen: loopbackTCP})
	b := startHost(t, Options{Listen: loopbackTCP, Bootstrap: []ma.Multiaddr{addrWith(t, a, "/tcp/")}})

	eventually(t, 10*time.Second, "a and b to list each other", func() bool {
		return hasPeer(a, b.ServerName()) && hasPeer(b, a.ServerName())
	})
	for _, p := range b.Peers() {
		if p.ServerName == a.ServerName() {
			if p.PeerID != a.ID() || len(p.Addrs) == 0 {
				t.Fatalf("peer info %+v, want peer ID %s and addresses", p, a.ID())
			}
		}
	}
	// The status endpoint serialises these as they are.
	raw, err := json.Marshal(b.Peers())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"server_name":"`+a.ServerName()+`"`) || !strings.Contains(string(raw), `"peer_id":"`+a.ID().String()+`"`) {
		t.Fatalf("peers JSON %s lacks a's names", raw)
	}
	for _, addr := range a.Addrs() {
		if !strings.HasSuffix(addr.String(), "/p2p/"+a.ID().String()) {
			t.Fatalf("address %s lacks the /p2p suffix", addr)
		}
	}
}

func TestBootstrapReconnectsAfterRestart(t *testing.T) {
	aID := newIdentity(t)
	a := startHost(t, Options{Identity: aID, Listen: loopbackTCP})
	addr := addrWith(t, a, "/tcp/")
	b := startHost(t, Options{Listen: loopbackTCP, Bootstrap: []ma.Multiaddr{addr}})
	eventually(t, 10*time.Second, "b to reach a", func() bool { return hasPeer(b, a.ServerName()) })

	// Stop a and start it again on the same address: b redials on its own.
	port, _ := addr.ValueForProtocol(ma.P_TCP)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "b to notice a is gone", func() bool { return !hasPeer(b, a.ServerName()) })
	a2 := startHost(t, Options{Identity: aID, Listen: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/" + port)}})
	eventually(t, 20*time.Second, "b to reconnect to the restarted a", func() bool { return hasPeer(b, a2.ServerName()) })
}

func TestFederationHTTPSeesAuthenticatedPeer(t *testing.T) {
	a := startHost(t, Options{Listen: loopbackTCP})
	if err := a.Serve(echoHandler()); err != nil {
		t.Fatal(err)
	}
	b := startHost(t, Options{Listen: loopbackTCP, Bootstrap: []ma.Multiaddr{addrWith(t, a, "/tcp/")}})
	eventually(t, 10*time.Second, "b to reach a", func() bool { return hasPeer(b, a.ServerName()) })

	got := getJSON(t, b.RoundTripper(), "GET", "matrix://"+a.ServerName()+"/_matrix/federation/v1/query/profile?user_id=%40u%3Ax&field=displayname", "")
	if got["path"] != "/_matrix/federation/v1/query/profile" || got["query"] != "user_id=%40u%3Ax&field=displayname" {
		t.Fatalf("handler saw path %q query %q", got["path"], got["query"])
	}
	if got["remote"] != b.ServerName() {
		t.Fatalf("handler saw remote %q, want %q", got["remote"], b.ServerName())
	}
	// http:// URLs and request bodies work the same.
	got = getJSON(t, b.RoundTripper(), "PUT", "http://"+a.ServerName()+"/_matrix/federation/v1/send/txn1", `{"pdus":[]}`)
	if got["method"] != "PUT" || got["body"] != `{"pdus":[]}` || got["remote"] != b.ServerName() {
		t.Fatalf("PUT: handler saw %v", got)
	}
}

func TestFclientOverLibp2p(t *testing.T) {
	a := startHost(t, Options{Listen: loopbackTCP})
	if err := a.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/federation/v1/version" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `{"server":{"name":"hearth","version":%q}}`, fedhttp.RemoteServerName(r))
	})); err != nil {
		t.Fatal(err)
	}
	b := startHost(t, Options{Listen: loopbackTCP, Bootstrap: []ma.Multiaddr{addrWith(t, a, "/tcp/")}})
	eventually(t, 10*time.Second, "b to reach a", func() bool { return hasPeer(b, a.ServerName()) })

	// gomatrixserverlib's client with our transport: its matrix:// URLs
	// must reach a with no DNS, .well-known or TLS involved.
	fc := fclient.NewClient(fclient.WithTransport(b.RoundTripper()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := fc.GetVersion(ctx, spec.ServerName(a.ServerName()))
	if err != nil {
		t.Fatalf("GetVersion: %v", err)
	}
	if v.Server.Name != "hearth" || v.Server.Version != b.ServerName() {
		t.Fatalf("version %+v", v.Server)
	}
}

func TestRoundTripFindsPeerByNameThroughRecords(t *testing.T) {
	// No DHT: c knows nothing of b but its name; a (which both bootstrap
	// to) answers c's record lookup with the record b signed.
	a := startHost(t, Options{Listen: loopbackTCP})
	boot := []ma.Multiaddr{addrWith(t, a, "/tcp/")}
	b := startHost(t, Options{Listen: loopbackTCP, Bootstrap: boot})
	if err := b.Serve(echoHandler()); err != nil {
		t.Fatal(err)
	}
	c := startHost(t, Options{Listen: loopbackTCP, Bootstrap: boot})
	eventually(t, 10*time.Second, "b and c to reach a, and a to identify b", func() bool {
		protos, _ := a.LibP2P().Peerstore().GetProtocols(b.ID())
		return hasPeer(a, b.ServerName()) && hasPeer(a, c.ServerName()) && len(protos) > 0
	})
	if c.LibP2P().Network().Connectedness(b.ID()) == network.Connected || len(c.LibP2P().Peerstore().Addrs(b.ID())) > 0 {
		t.Fatal("c already knows b: the test would prove nothing")
	}
	got := getJSON(t, c.RoundTripper(), "GET", "matrix://"+b.ServerName()+"/_matrix/federation/v1/version", "")
	if got["remote"] != c.ServerName() {
		t.Fatalf("b saw remote %q, want %q", got["remote"], c.ServerName())
	}
}

func TestDHTFindsPeer(t *testing.T) {
	a := startHost(t, Options{Listen: loopbackTCP, DHT: true})
	boot := []ma.Multiaddr{addrWith(t, a, "/tcp/")}
	b := startHost(t, Options{Listen: loopbackTCP, DHT: true, Bootstrap: boot})
	c := startHost(t, Options{Listen: loopbackTCP, DHT: true, Bootstrap: boot})
	eventually(t, 10*time.Second, "b and c to reach a", func() bool {
		return hasPeer(b, a.ServerName()) && hasPeer(c, a.ServerName())
	})
	if c.Routing() == nil {
		t.Fatal("DHT on but no routing")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var found bool
	// The DHT adds a peer to its table once identify has told it that the
	// peer speaks /hearth/kad/1.0.0: retry until then.
	eventually(t, 15*time.Second, "c's DHT to find b", func() bool {
		ai, err := c.Routing().FindPeer(ctx, b.ID())
		found = err == nil && len(ai.Addrs) > 0
		return found
	})
	protos, err := a.LibP2P().Peerstore().GetProtocols(b.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !containsProto(protos, "/hearth/kad/1.0.0") {
		t.Fatalf("b does not speak the Hearth DHT protocol: %v", protos)
	}
}

func containsProto[T ~string](ps []T, want string) bool {
	for _, p := range ps {
		if string(p) == want {
			return true
		}
	}
	return false
}

func TestNameCheckRejectsNonCanonicalNames(t *testing.T) {
	a := startHost(t, Options{Listen: loopbackTCP})
	if err := a.Serve(echoHandler()); err != nil {
		t.Fatal(err)
	}
	b := startHost(t, Options{Listen: loopbackTCP, Bootstrap: []ma.Multiaddr{addrWith(t, a, "/tcp/")}})
	eventually(t, 10*time.Second, "b to reach a", func() bool { return hasPeer(b, a.ServerName()) })

	client := &http.Client{Transport: b.RoundTripper()}
	for _, name := range []string{
		strings.ToUpper(a.ServerName()), // same key, other spelling
		a.ID().String(),                 // 12D3KooW… form of the same key
		"example.org",
		"",
	} {
		resp, err := client.Get("matrix://" + name + "/_matrix/federation/v1/version")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("request to %q succeeded, want it refused", name)
		}
		if strings.HasPrefix(name, "k") || strings.HasPrefix(name, "K") {
			if !errors.Is(err, identity.ErrNotCanonical) {
				t.Fatalf("request to %q: %v, want ErrNotCanonical", name, err)
			}
		}
		if !strings.Contains(err.Error(), "identity:") {
			t.Fatalf("request to %q: %v, want the name refused before any dial", name, err)
		}
	}
	if _, err := client.Get("https://" + a.ServerName() + "/"); err == nil {
		t.Fatal("https scheme accepted")
	}
	if err := b.Connect(context.Background(), strings.ToUpper(a.ServerName())); !errors.Is(err, identity.ErrNotCanonical) {
		t.Fatalf("Connect(upper case): %v", err)
	}
	// To self is refused without dialling.
	if _, err := client.Get("matrix://" + b.ServerName() + "/"); !errors.Is(err, fedhttp.ErrSelf) {
		t.Fatalf("request to self: %v", err)
	}
}

func TestRemoteServerNameOutsideLibp2p(t *testing.T) {
	r, _ := http.NewRequest("GET", "http://x/", nil)
	if got := fedhttp.RemoteServerName(r); got != "" {
		t.Fatalf("plain request has remote %q", got)
	}
}
