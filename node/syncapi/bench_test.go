package syncapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
	"hearth/node/syncapi"
)

// serve calls a handler directly (server time only, no HTTP client).
func serve(b *testing.B, handler http.HandlerFunc, user, target string, path map[string]string) []byte {
	req := httptest.NewRequest("GET", target, nil)
	req = req.WithContext(httputil.WithDevice(req.Context(), &httputil.Device{UserID: user, DeviceID: "DEV"}))
	for k, v := range path {
		req.SetPathValue(k, v)
	}
	rec := httptest.NewRecorder()
	handler(rec, req)
	if rec.Code != 200 {
		b.Fatalf("%s: %d %s", target, rec.Code, rec.Body.Bytes())
	}
	return rec.Body.Bytes()
}

// fill sends n messages to a room in commits of up to 100.
func (h *harness) fill(room, sender string, n int) {
	for n > 0 {
		k := min(n, 100)
		evs := make([]roomserver.NewEvent, k)
		for i := range evs {
			evs[i] = msg(sender, fmt.Sprintf("message %d with a body of a typical length for chat", n-i))
		}
		h.send(room, evs...)
		n -= k
	}
}

// 50 rooms of 200 events each, initial sync with the default filter.
func BenchmarkInitialSync(b *testing.B) {
	h := newHarness(b)
	for i := 0; i < 50; i++ {
		h.fill(h.createRoom(alice), alice, 200)
	}
	serve(b, h.sy.HandleSync, alice, "/_matrix/client/v3/sync", nil) // warm the cache, as a live node is
	b.ResetTimer()
	for b.Loop() {
		serve(b, h.sy.HandleSync, alice, "/_matrix/client/v3/sync", nil)
	}
}

// The same with nothing cached: every event parsed and formatted.
func BenchmarkInitialSyncCold(b *testing.B) {
	h := newHarnessCfg(b, syncapi.Config{EventCacheSize: -1})
	for i := 0; i < 50; i++ {
		h.fill(h.createRoom(alice), alice, 200)
	}
	b.ResetTimer()
	for b.Loop() {
		serve(b, h.sy.HandleSync, alice, "/_matrix/client/v3/sync", nil)
	}
}

// An incremental sync with nothing new, for a user in 50 rooms.
func BenchmarkIncrementalSyncEmpty(b *testing.B) {
	h := newHarness(b)
	for i := 0; i < 50; i++ {
		h.fill(h.createRoom(alice), alice, 20)
	}
	target := "/_matrix/client/v3/sync?since=" + url.QueryEscape(initialBatch(b, h))
	b.ResetTimer()
	for b.Loop() {
		serve(b, h.sy.HandleSync, alice, target, nil)
	}
}

// The common incremental sync: one new message, from someone else, in
// one of the user's 50 rooms (the /sync a chat message wakes).
func BenchmarkIncrementalSyncOneMessage(b *testing.B) {
	h := newHarness(b)
	var room string
	for i := 0; i < 50; i++ {
		room = h.createRoom(alice)
		h.fill(room, alice, 20)
	}
	h.send(room, member(bob, bob, "join"))
	benchIncremental(b, h, "", func(i int) { h.send(room, msg(bob, fmt.Sprint("message ", i))) })
}

// initialBatch is the next_batch of alice's initial sync.
func initialBatch(b *testing.B, h *harness) string {
	var res struct {
		NextBatch string `json:"next_batch"`
	}
	json.Unmarshal(serve(b, h.sy.HandleSync, alice, "/_matrix/client/v3/sync", nil), &res)
	return res.NextBatch
}

// benchIncremental times alice's incremental syncs (with query, "" or
// ending in "&"), each after news made by change(i), untimed, i from 1.
func benchIncremental(b *testing.B, h *harness, query string, change func(i int)) {
	since := initialBatch(b, h)
	i := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		i++
		change(i)
		target := "/_matrix/client/v3/sync?" + query + "since=" + url.QueryEscape(since)
		b.StartTimer()
		body := serve(b, h.sy.HandleSync, alice, target, nil)
		b.StopTimer()
		var res struct {
			NextBatch string `json:"next_batch"`
		}
		json.Unmarshal(body, &res)
		since = res.NextBatch
		b.StartTimer()
	}
}

// An old since token: 20,000 events ago, for a user in 50 rooms of which
// 10 changed (400 events each); the other 16,000 events went to rooms the
// user is not in. The work follows the changed rooms, not the history.
func BenchmarkIncrementalSyncOldSince(b *testing.B) {
	h := newHarness(b)
	var rooms []string
	for i := 0; i < 50; i++ {
		rooms = append(rooms, h.createRoom(alice))
	}
	since := initialBatch(b, h)
	for _, r := range rooms[:10] {
		h.fill(r, alice, 200)
		h.fill(h.createRoom(bob), bob, 800)
		h.fill(r, alice, 200)
	}
	target := "/_matrix/client/v3/sync?since=" + url.QueryEscape(since)
	b.ResetTimer()
	for b.Loop() {
		serve(b, h.sy.HandleSync, alice, target, nil)
	}
}

// Back-pagination of a 4,200-event room with /messages, 100 per page.
func BenchmarkMessagesPage(b *testing.B) {
	benchMessages(b, syncapi.Config{})
}

// The same with nothing cached.
func BenchmarkMessagesPageCold(b *testing.B) {
	benchMessages(b, syncapi.Config{EventCacheSize: -1})
}

// Pages of one event: what every /messages request costs whatever its
// size (the read, the room and membership, the ignore list).
func BenchmarkMessagesPageOfOne(b *testing.B) {
	benchMessagesLimit(b, syncapi.Config{}, 1)
}

func benchMessages(b *testing.B, cfg syncapi.Config) {
	benchMessagesLimit(b, cfg, 100)
}

func benchMessagesLimit(b *testing.B, cfg syncapi.Config, limit int) {
	h := newHarnessCfg(b, cfg)
	room := h.createRoom(alice)
	h.fill(room, alice, 4200)
	path := map[string]string{"roomId": room}
	base := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/messages?dir=b&limit=" + fmt.Sprint(limit)
	from := ""
	pages := 0
	b.ResetTimer()
	for b.Loop() {
		target := base
		if from != "" {
			target += "&from=" + from
		}
		// Only the end token is read: the benchmark times the server.
		body := serve(b, h.sy.HandleMessages, alice, target, path)
		from = ""
		if i := bytes.LastIndex(body, []byte(`"end":"`)); i >= 0 {
			rest := body[i+len(`"end":"`):]
			from = string(rest[:bytes.IndexByte(rest, '"')])
		}
		pages++
	}
	b.ReportMetric(float64(pages)/b.Elapsed().Seconds(), "pages/s")
}

// Send→sync delivery (send, then the waiting poll's answer) with 500 idle
// long-polls open, each its own user in its own room.
func BenchmarkDeliveryWith500IdlePolls(b *testing.B) {
	h := newHarnessCfg(b, syncapi.Config{MaxTimeout: time.Minute})
	http.DefaultTransport.(*http.Transport).MaxIdleConnsPerHost = 600
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := 0; i < 500; i++ {
		user := fmt.Sprintf("@idle%d:%s", i, server)
		room := h.createRoom(user)
		since := h.sync(user, "", "").NextBatch
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if next, _ := h.longPoll(ctx, user, since, room); next != "" {
					since = next
				}
			}
		}()
	}
	room := h.createRoom(alice)
	since := h.sync(alice, "", "").NextBatch
	var lat []time.Duration
	b.ResetTimer()
	for b.Loop() {
		got := make(chan string, 1)
		go func() {
			next, ok := h.longPoll(ctx, alice, since, room)
			if !ok {
				next = ""
			}
			got <- next
		}()
		time.Sleep(2 * time.Millisecond) // let the poll start waiting
		t0 := time.Now()
		h.send(room, msg(alice, "ping"))
		next := <-got
		lat = append(lat, time.Since(t0))
		if next == "" {
			b.Fatal("poll did not deliver the event")
		}
		since = next
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// An incremental sync with nothing new for the user while the ephemeral
// streams move elsewhere: between two syncs someone types, reads, changes
// presence or keys in rooms the user is not in. The user (50 rooms, keys
// uploaded) pays for the streams having moved, not for what moved.
func BenchmarkIncrementalSyncEmptyBusyStreams(b *testing.B) {
	h := newHarness(b)
	ctx := context.Background()
	h.account(alice, "DEV")
	for i := 0; i < 50; i++ {
		h.fill(h.createRoom(alice), alice, 20)
	}
	otks := []storage.OneTimeKey{{KeyID: "signed_curve25519:A", Algorithm: "signed_curve25519", Key: []byte(`{}`)}}
	if _, err := h.db.PutDeviceKeys(ctx, alice, "DEV", nil, otks, otks); err != nil {
		b.Fatal(err)
	}
	elsewhere := h.createRoom(bob)
	ev := h.send(elsewhere, msg(bob, "elsewhere"))[0]
	benchIncremental(b, h, "set_presence=offline&", func(i int) {
		switch i % 4 {
		case 0:
			h.sy.OnTyping(elsewhere, bob, i%8 == 0, time.Minute)
		case 1:
			h.sy.OnReceipt(elsewhere, fmt.Sprintf("@r%d:%s", i, server), "m.read", ev, "")
		case 2:
			h.sy.OnPresence(bob, []string{"online", "unavailable"}[i%8/4], "")
		case 3:
			h.sy.DeviceListChanged(ctx, bob, []string{"DEV"}, false)
		}
	})
}
