package federation_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"hearth/node/roomserver"
)

func percentile(ds []time.Duration, p float64) float64 {
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[int(float64(len(s)-1)*p)].Microseconds()) / 1000
}

// BenchmarkDeliveryLatency measures one event's trip: sent on A, until it
// is in B's stream (through A's queue, HTTP, B's checks and storage).
func BenchmarkDeliveryLatency(b *testing.B) {
	_, a, bb, alice, _, room := sharedRoom(b)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		id := a.send(room, msg(alice, fmt.Sprintf("ping %d", i)))[0]
		if err := bb.waitFor(10*time.Second, id); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(percentile(lat, 0.5), "p50-ms")
	b.ReportMetric(percentile(lat, 0.99), "p99-ms")
}

// BenchmarkRemoteJoin1000Members measures a server joining a room of
// 1,000 members through another: make_join, send_join, checking and
// storing the state and auth chain.
func BenchmarkRemoteJoin1000Members(b *testing.B) {
	ctx := context.Background()
	n := newNet()
	a := newNode(b, n, "a.test")
	alice := a.user("alice")
	room := a.publicRoom(alice, "shared")
	for batch := 0; batch < 10; batch++ {
		var evs []roomserver.NewEvent
		for i := range 100 {
			u := fmt.Sprintf("@member%d:a.test", batch*100+i)
			evs = append(evs, member(u, u, "join"))
		}
		a.send(room, evs...)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		j := newNode(b, n, fmt.Sprintf("joiner%d.test", i))
		u := j.user("newcomer")
		b.StartTimer()
		if _, err := j.fed.PerformJoin(ctx, room, u, []string{"a.test"}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if got := len(j.stateIDs(room)); got < 1002 {
			b.Fatalf("joined with %d state events", got)
		}
		j.stop()
		b.StartTimer()
	}
}

// BenchmarkTwentyServersInOneRoom: every server sends a message at once;
// the figure is the time from the last send until every server has every
// message.
func BenchmarkTwentyServersInOneRoom(b *testing.B) {
	const servers = 20
	n := newNet()
	nodes := make([]*node, servers)
	users := make([]string, servers)
	for i := range nodes {
		nodes[i] = newNode(b, n, fmt.Sprintf("s%02d.test", i))
		users[i] = nodes[i].user("user")
	}
	room := nodes[0].publicRoom(users[0], "shared")
	var joins []string
	for i := 1; i < servers; i++ {
		nodes[i].join(room, users[i], "s00.test")
		joins = append(joins, nodes[i].stateIDs(room)["m.room.member|"+users[i]])
	}
	// Each server sees, in its stream, its own join and the later ones
	// (earlier joins came to it as state).
	for i, nd := range nodes {
		if err := nd.waitFor(30*time.Second, joins[max(i-1, 0):]...); err != nil {
			b.Fatal(err)
		}
	}
	var spread []time.Duration
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		ids := make([]string, servers)
		var wg sync.WaitGroup
		for i, nd := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := nd.rs.Send(context.Background(), room, msg(users[i], fmt.Sprintf("round %d from %d", it, i)))
				if err != nil {
					b.Error(err)
					return
				}
				ids[i] = got[0]
			}()
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
		last := time.Now()
		for _, nd := range nodes {
			if err := nd.waitFor(30*time.Second, ids...); err != nil {
				b.Fatal(err)
			}
		}
		spread = append(spread, time.Since(last))
	}
	b.StopTimer()
	b.ReportMetric(percentile(spread, 0.5), "p50-all-have-all-ms")
	b.ReportMetric(percentile(spread, 1), "max-all-have-all-ms")
}
