package node_test

import (
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"
)

// BenchmarkDelivery: one message at a time from a user on one node to a
// user on another, timed from the send request to the message in the
// other user's /sync long poll: the whole path a chat message takes
// (build, commit, federation, verify, commit, sync). The sender's own
// client long-polls too, as every chat client does: its answer competes
// with the fan-out for the node (in the browser, for its one thread).
// Under js/wasm (see testnode) it profiles the browser node's share of
// that path.
func BenchmarkDelivery(b *testing.B) {
	net := newNetwork(b)
	a, bn := net.add(), net.add()
	alice, bob := a.register(b, "alice"), bn.register(b, "bob")
	room := alice.createRoom(map[string]any{"preset": "public_chat"})
	bob.join(room, a.Name)
	since := bob.sync("", 0).NextBatch
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		var res syncResponse
		for {
			select {
			case <-stop:
				return
			default:
			}
			q := url.Values{"timeout": {"1000"}, "since": {res.NextBatch}}
			if err := alice.Try("GET", "/sync?"+q.Encode(), nil, &res); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); <-polled }()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		body := fmt.Sprint("delivery ", i)
		start := time.Now()
		alice.send(room, body, i)
		for {
			res := bob.sync(since, 5000)
			since = res.NextBatch
			if slices.Contains(bodies(res.Rooms.Join[room].Timeline.Events), body) {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
}

type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []clientEvent `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// sync long-polls for up to timeoutMS from since ("" for an initial sync).
func (u *user) sync(since string, timeoutMS int) syncResponse {
	q := url.Values{"timeout": {fmt.Sprint(timeoutMS)}}
	if since != "" {
		q.Set("since", since)
	}
	var res syncResponse
	u.Do("GET", "/sync?"+q.Encode(), nil, &res)
	return res
}
