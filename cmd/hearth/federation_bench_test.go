package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"hearth/p2p/host"
)

// startPeers starts n peers in this process, federating over real libp2p
// hosts on loopback (TCP), the first one the others' bootstrap peer.
func startPeers(tb testing.TB, n int) []*peer {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var ps []*peer
	tb.Cleanup(func() {
		for _, p := range ps {
			p.close(log)
		}
	})
	for i := range n {
		opts := &options{Data: tb.TempDir(), HTTP: "127.0.0.1:0", P2P: []string{"/ip4/127.0.0.1/tcp/0"},
			NoMDNS: true, NoDHT: true, Relay: host.DefaultRelayLimits()}
		if i > 0 {
			opts.Bootstrap = []string{ps[0].host.Addrs()[0].String()}
		}
		p, err := startPeer(context.Background(), opts, log)
		if err != nil {
			tb.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

// roomOf starts peers, one user each, all joined to one room made on the
// first peer.
func roomOf(tb testing.TB, n int) ([]*peer, []*demoUser, string) {
	ctx := context.Background()
	ps := startPeers(tb, n)
	users := make([]*demoUser, n)
	for i, p := range ps {
		u, err := demoRegister(ctx, "http://"+p.addr, fmt.Sprintf("u%d", i))
		if err != nil {
			tb.Fatal(err)
		}
		users[i] = u
	}
	var room struct {
		RoomID string `json:"room_id"`
	}
	if err := users[0].do(ctx, "POST", "/createRoom", map[string]any{"preset": "public_chat"}, &room); err != nil {
		tb.Fatal(err)
	}
	for i := 1; i < n; i++ {
		path := "/join/" + url.PathEscape(room.RoomID) + "?server_name=" + url.QueryEscape(ps[0].id.ServerName)
		if err := users[i].do(ctx, "POST", path, map[string]any{}, nil); err != nil {
			tb.Fatal(err)
		}
	}
	// Settled: every peer knows every member (so sends every other).
	deadline := time.Now().Add(30 * time.Second)
	for _, u := range users {
		for {
			var res struct {
				Joined map[string]any `json:"joined"`
			}
			if err := u.do(ctx, "GET", "/rooms/"+url.PathEscape(room.RoomID)+"/joined_members", nil, &res); err != nil {
				tb.Fatal(err)
			}
			if len(res.Joined) == n {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("a peer knows %d of %d members after 30s", len(res.Joined), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return ps, users, room.RoomID
}

// nextBatch is the user's current sync position.
func (u *demoUser) nextBatch(ctx context.Context) (string, error) {
	var res struct {
		NextBatch string `json:"next_batch"`
	}
	err := u.do(ctx, "GET", "/sync?timeout=0", nil, &res)
	return res.NextBatch, err
}

// waitForEvent long-polls /sync from since until eventID arrives.
func (u *demoUser) waitForEvent(ctx context.Context, since, eventID string) error {
	for {
		var res struct {
			NextBatch string `json:"next_batch"`
			Rooms     struct {
				Join map[string]struct {
					Timeline struct {
						Events []struct {
							EventID string `json:"event_id"`
						} `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		if err := u.do(ctx, "GET", "/sync?timeout=10000&since="+url.QueryEscape(since), nil, &res); err != nil {
			return err
		}
		for _, r := range res.Rooms.Join {
			for _, e := range r.Timeline.Events {
				if e.EventID == eventID {
					return nil
				}
			}
		}
		since = res.NextBatch
	}
}

// BenchmarkFederationDelivery: a message sent on one peer, until the user
// on the other peer has it from a /sync long-poll, over libp2p on loopback.
func BenchmarkFederationDelivery(b *testing.B) {
	ctx := context.Background()
	_, users, room := roomOf(b, 2)
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		since, err := users[1].nextBatch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		var sent struct {
			EventID string `json:"event_id"`
		}
		path := fmt.Sprintf("/rooms/%s/send/m.room.message/b%d", url.PathEscape(room), i)
		if err := users[0].do(ctx, "PUT", path, map[string]string{"msgtype": "m.text", "body": "ping"}, &sent); err != nil {
			b.Fatal(err)
		}
		if err := users[1].waitForEvent(ctx, since, sent.EventID); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*95/100].Microseconds())/1000, "p95-ms")
}

// BenchmarkTwentyPeers: 20 peers in one room each send a message at once;
// the time from the last send until every peer has all 20.
func BenchmarkTwentyPeers(b *testing.B) {
	ctx := context.Background()
	const n = 20
	_, users, room := roomOf(b, n)
	b.ResetTimer()
	for round := 0; round < b.N; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var lastSend time.Time
		for i, u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				path := fmt.Sprintf("/rooms/%s/send/m.room.message/r%d-%d", url.PathEscape(room), round, i)
				if err := u.do(ctx, "PUT", path, map[string]string{"msgtype": "m.text", "body": fmt.Sprint(round)}, nil); err != nil {
					b.Error(err)
				}
				mu.Lock()
				lastSend = time.Now()
				mu.Unlock()
			}()
		}
		wg.Wait()
		for _, u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := u.waitForMessages(ctx, room, n*(round+1), 30*time.Second); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(time.Since(lastSend).Seconds(), "s-after-last-send")
	}
}
