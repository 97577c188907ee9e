//go:build !js

package host

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// benchPair starts a serving a small and a bulk handler on listen, and b
// connected to it.
func benchPair(b *testing.B, listen string) (srv, cli *Host) {
	srv = startHost(b, Options{Listen: []ma.Multiaddr{ma.StringCast(listen)}})
	mux := http.NewServeMux()
	mux.Handle("/bulk", bulkHandler())
	mux.HandleFunc("/_matrix/federation/v1/version", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"server":{"name":"hearth","version":"0"}}`)
	})
	if err := srv.Serve(mux); err != nil {
		b.Fatal(err)
	}
	cli = startHost(b, Options{Bootstrap: srv.Addrs()[:1]})
	eventually(b, 10*time.Second, "connection", func() bool { return hasPeer(cli, srv.ServerName()) })
	return srv, cli
}

func doGet(b *testing.B, c *http.Client, url string, close bool) {
	req, _ := http.NewRequestWithContext(context.Background(), "GET", url, nil)
	req.Close = close
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

// BenchmarkFederationRoundTrip measures one small federation GET over a
// libp2p stream on loopback and reports the median (p50) and p99. The
// "new-stream" variants send Connection: close, as go-libp2p's p2p/http
// does, so every request negotiates a fresh stream.
func BenchmarkFederationRoundTrip(b *testing.B) {
	for _, tc := range []struct {
		name, listen string
		close        bool
	}{
		{"tcp/keepalive", "/ip4/127.0.0.1/tcp/0", false},
		{"tcp/new-stream", "/ip4/127.0.0.1/tcp/0", true},
		{"quic/keepalive", "/ip4/127.0.0.1/udp/0/quic-v1", false},
		{"ws/keepalive", "/ip4/127.0.0.1/tcp/0/ws", false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			srv, cli := benchPair(b, tc.listen)
			c := &http.Client{Transport: cli.RoundTripper()}
			url := "matrix://" + srv.ServerName() + "/_matrix/federation/v1/version"
			doGet(b, c, url, tc.close) // warm up: dial, identify
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				doGet(b, c, url, tc.close)
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkFederationThroughput moves 10 MB responses directly and over a
// relay circuit on loopback (MB/s).
func BenchmarkFederationThroughput(b *testing.B) {
	b.Run("direct-tcp", func(b *testing.B) {
		srv, cli := benchPair(b, "/ip4/127.0.0.1/tcp/0")
		c := &http.Client{Transport: cli.RoundTripper()}
		url := "matrix://" + srv.ServerName() + "/bulk?n=" + strconv.Itoa(bulkSize)
		b.SetBytes(bulkSize)
		b.ResetTimer()
		for range b.N {
			doGet(b, c, url, false)
		}
	})
	b.Run("relayed-tcp", func(b *testing.B) {
		// Unlimited: b.N × 10 MB would pass the default 64 MiB per circuit
		// and the relay would (rightly) reset it mid-benchmark.
		relay := startHost(b, Options{Listen: loopbackTCP, RelayService: true, Relay: RelayLimits{Unlimited: true}})
		rAddr := addrWith(b, relay, "/tcp/")
		srv := startHost(b, Options{Relays: []ma.Multiaddr{rAddr}})
		if err := srv.Serve(bulkHandler()); err != nil {
			b.Fatal(err)
		}
		cli := startHost(b, Options{Bootstrap: []ma.Multiaddr{rAddr}})
		eventually(b, 15*time.Second, "reservation", func() bool {
			_, ok := relay.records.Store().Get(srv.ID())
			return ok && hasPeer(cli, relay.ServerName())
		})
		c := &http.Client{Transport: cli.RoundTripper()}
		url := "matrix://" + srv.ServerName() + "/bulk?n=" + strconv.Itoa(bulkSize)
		b.SetBytes(bulkSize)
		b.ResetTimer()
		for range b.N {
			doGet(b, c, url, false)
		}
	})
}
