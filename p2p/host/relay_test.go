//go:build !js

package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"hearth/p2p/fedhttp"
)

const bulkSize = 10 << 20

// bulkHandler serves GET /bulk?n=N (N deterministic bytes) and answers a
// PUT with the SHA-256 of its body and the remote server name.
func bulkHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = io.Copy(w, io.LimitReader(pattern{}, int64(n)))
		case http.MethodPut:
			h := sha256.New()
			if _, err := io.Copy(h, r.Body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			io.WriteString(w, hex.EncodeToString(h.Sum(nil))+" "+fedhttp.RemoteServerName(r))
		}
	})
}

// pattern is an endless deterministic byte stream.
type pattern struct{}

func (pattern) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i * 7)
	}
	return len(p), nil
}

func patternSum(n int) string {
	h := sha256.New()
	_, _ = io.Copy(h, io.LimitReader(pattern{}, int64(n)))
	return hex.EncodeToString(h.Sum(nil))
}

// relayTrio starts relay a, b reachable only through a (no listen
// addresses, a reservation on a) serving bulkHandler, and c bootstrapped
// to a. It returns once a holds b's signed record.
func relayTrio(t *testing.T, limits RelayLimits) (a, b, c *Host) {
	a = startHost(t, Options{Listen: loopbackTCP, RelayService: true, Relay: limits})
	aAddr := addrWith(t, a, "/tcp/")
	b = startHost(t, Options{Relays: []ma.Multiaddr{aAddr}})
	if err := b.Serve(bulkHandler()); err != nil {
		t.Fatal(err)
	}
	c = startHost(t, Options{Listen: loopbackTCP, Bootstrap: []ma.Multiaddr{aAddr}})
	eventually(t, 15*time.Second, "b's reservation and record at a, and c connected to a", func() bool {
		_, ok := a.records.Store().Get(b.ID())
		return ok && hasPeer(c, a.ServerName())
	})
	if len(b.LibP2P().Addrs()) != 0 {
		t.Fatalf("b listens at %v: the test must force the circuit", b.LibP2P().Addrs())
	}
	for _, addr := range b.Addrs() {
		if !strings.Contains(addr.String(), "/p2p/"+a.ID().String()+"/p2p-circuit/p2p/"+b.ID().String()) {
			t.Fatalf("b's address %s is not a circuit through a", addr)
		}
	}
	return a, b, c
}

func TestRelayCircuitCarriesBulkTransfer(t *testing.T) {
	a, b, c := relayTrio(t, RelayLimits{})
	client := &http.Client{Transport: c.RoundTripper()}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// 10 MB from b to c, found by name alone, over a circuit through a: far
	// beyond go-libp2p's default 128 KiB per circuit.
	req, _ := http.NewRequestWithContext(ctx, "GET", "matrix://"+b.ServerName()+"/bulk?n="+strconv.Itoa(bulkSize), nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET through relay: %v", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || n != bulkSize || hex.EncodeToString(h.Sum(nil)) != patternSum(bulkSize) {
		t.Fatalf("received %d bytes (err %v), want %d intact", n, err, bulkSize)
	}

	// And 10 MB the other way, on the same kept-alive stream.
	req, _ = http.NewRequestWithContext(ctx, "PUT", "matrix://"+b.ServerName()+"/bulk", io.LimitReader(pattern{}, bulkSize))
	resp, err = client.Do(req)
	if err != nil {
		t.Fatalf("PUT through relay: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := patternSum(bulkSize) + " " + c.ServerName(); string(body) != want {
		t.Fatalf("b answered %q, want %q", body, want)
	}

	// c's only connection to b is the circuit through a.
	var via []string
	for _, p := range c.Peers() {
		if p.PeerID == b.ID() {
			for _, addr := range p.Addrs {
				via = append(via, addr.String())
			}
		}
	}
	if len(via) == 0 {
		t.Fatal("c lists no connection to b")
	}
	for _, v := range via {
		if !strings.Contains(v, a.ID().String()+"/p2p-circuit") {
			t.Fatalf("c reaches b at %s, not through a", v)
		}
	}
}

func TestRelayCircuitLimitIsEnforced(t *testing.T) {
	// With a small per-circuit limit the same transfer must break: the
	// limits in Options really reach the relay.
	_, b, c := relayTrio(t, RelayLimits{CircuitData: 256 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "matrix://"+b.ServerName()+"/bulk?n="+strconv.Itoa(bulkSize), nil)
	resp, err := (&http.Client{Transport: c.RoundTripper()}).Do(req)
	if err != nil {
		t.Logf("cut before the headers: %v", err)
		return
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && n == bulkSize {
		t.Fatalf("10 MB crossed a circuit limited to 256 KiB")
	}
	t.Logf("cut after %d bytes: %v", n, err)
}
