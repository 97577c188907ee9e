package syncapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"hearth/node/httputil"
	"hearth/node/internal/testdb"
	"hearth/node/syncapi"
)

func TestLongPollWakesOnEvent(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	res := h.sync(alice, "", "")

	type result struct {
		res  syncResp
		code int
	}
	done := make(chan result, 1)
	go func() {
		var r syncResp
		code := h.get(dev(alice), "/_matrix/client/v3/sync", url.Values{"since": {res.NextBatch}, "timeout": {"10000"}}, &r)
		done <- result{r, code}
	}()
	// Whether the poll is already waiting or not, the event must reach it:
	// either it reads it or it is woken by it.
	id := h.send(room, msg(alice, "wake up"))[0]
	select {
	case r := <-done:
		if r.code != 200 || !contains(r.res.Rooms.Join[room].Timeline.Events, id) {
			t.Fatalf("woken sync: %d %+v", r.code, r.res.Rooms)
		}
	case <-time.After(9 * time.Second):
		t.Fatal("long-poll not woken by an event in its room")
	}
}

func TestLongPollWakesOnAccountDataAndInvite(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(bob)
	res := h.sync(alice, "", "")
	poll := func() chan syncResp {
		ch := make(chan syncResp, 1)
		go func() {
			var r syncResp
			h.get(dev(alice), "/_matrix/client/v3/sync", url.Values{"since": {res.NextBatch}, "timeout": {"10000"}}, &r)
			ch <- r
		}()
		return ch
	}
	ch := poll()
	pos, err := h.db.PutAccountData(context.Background(), alice, "", "m.direct", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	h.sy.OnAccountData(alice, pos)
	select {
	case r := <-ch:
		if len(r.AccountData.Events) != 1 {
			t.Fatalf("account data: %+v", r.AccountData)
		}
		res = r
	case <-time.After(9 * time.Second):
		t.Fatal("long-poll not woken by account data")
	}
	ch = poll()
	h.send(room, member(bob, alice, "invite"))
	select {
	case r := <-ch:
		if _, ok := r.Rooms.Invite[room]; !ok {
			t.Fatalf("invite: %+v", r.Rooms)
		}
	case <-time.After(9 * time.Second):
		t.Fatal("long-poll not woken by an invite")
	}
}

func TestLongPollTimesOutEmpty(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	other := h.createRoom(bob)
	res := h.sync(alice, "", "")
	h.send(other, msg(bob, "not alice's business"))
	var r syncResp
	if code := h.get(dev(alice), "/_matrix/client/v3/sync", url.Values{"since": {res.NextBatch}, "timeout": {"50"}}, &r); code != 200 {
		t.Fatalf("status %d", code)
	}
	if len(r.Rooms.Join) != 0 || r.NextBatch == "" {
		t.Errorf("timed-out sync: rooms %v next_batch %q", r.Rooms.Join, r.NextBatch)
	}
	// The next token still delivers what comes next.
	id := h.send(room, msg(alice, "later"))[0]
	if got := h.sync(alice, r.NextBatch, ""); !contains(got.Rooms.Join[room].Timeline.Events, id) {
		t.Error("event after a timed-out poll not delivered")
	}
}

func TestLongPollEndsWithRequest(t *testing.T) {
	h := newHarness(t)
	h.createRoom(alice)
	res := h.sync(alice, "", "")
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(httputil.WithDevice(ctx, &httputil.Device{UserID: alice, DeviceID: "DEV"}),
		"GET", "/_matrix/client/v3/sync?timeout=10000&since="+url.QueryEscape(res.NextBatch), nil)
	done := make(chan struct{})
	go func() {
		h.sy.HandleSync(httptest.NewRecorder(), req)
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(9 * time.Second):
		t.Fatal("long-poll outlived its request")
	}
}

func TestBadInput(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	res := h.sync(alice, "", "")
	future := "s999999"
	sync := "/_matrix/client/v3/sync"
	msgs := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/messages"
	cases := []struct {
		name, path string
		q          url.Values
		token      string
		status     int
		code       string
	}{
		{"no device", sync, nil, "", 401, "M_MISSING_TOKEN"},
		{"since garbage", sync, url.Values{"since": {"garbage"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"since negative", sync, url.Values{"since": {"s-1"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"since too many streams", sync, url.Values{"since": {"s1_2_3_4_5_6_7_8"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"since empty stream", sync, url.Values{"since": {"s1__2"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"since pagination token", sync, url.Values{"since": {"t5"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"since huge", sync, url.Values{"since": {"s99999999999999999999"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"since from the future", sync, url.Values{"since": {future}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"timeout", sync, url.Values{"timeout": {"soon"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"full_state", sync, url.Values{"full_state": {"yes"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"set_presence", sync, url.Values{"set_presence": {"busy"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"filter JSON", sync, url.Values{"filter": {`{"room":`}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"filter shape", sync, url.Values{"filter": {`{"room":{"timeline":{"limit":"ten"}}}`}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"filter ID unknown", sync, url.Values{"filter": {"12345"}}, dev(alice), 404, "M_NOT_FOUND"},
		{"filter ID not a number", sync, url.Values{"filter": {"abc"}}, dev(alice), 404, "M_NOT_FOUND"},
		{"messages no device", msgs, url.Values{"dir": {"b"}}, "", 401, "M_MISSING_TOKEN"},
		{"messages dir", msgs, url.Values{"dir": {"up"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"messages no dir", msgs, nil, dev(alice), 400, "M_MISSING_PARAM"},
		{"messages from", msgs, url.Values{"dir": {"b"}, "from": {"x12"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"messages to", msgs, url.Values{"dir": {"b"}, "to": {"t"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"messages limit", msgs, url.Values{"dir": {"b"}, "limit": {"-1"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"messages filter", msgs, url.Values{"dir": {"b"}, "filter": {"{"}}, dev(alice), 400, "M_INVALID_PARAM"},
		{"context limit", msgs[:len(msgs)-len("messages")] + "context/x", url.Values{"limit": {"x"}}, dev(alice), 400, "M_INVALID_PARAM"},
	}
	for _, c := range cases {
		var e matrixError
		if code := h.get(c.token, c.path, c.q, &e); code != c.status || e.Code != c.code {
			t.Errorf("%s: %d %s (%s), want %d %s", c.name, code, e.Code, e.Msg, c.status, c.code)
		}
	}
	// None of this disturbed a good sync.
	if got := h.sync(alice, res.NextBatch, ""); got.NextBatch == "" {
		t.Error("no next_batch after bad requests")
	}
	// A request without a device, served directly, is refused too.
	rec := httptest.NewRecorder()
	h.sy.HandleContext(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("context without device: %d", rec.Code)
	}
}

// The browser runs one exclusive connection for everything: sync's reads
// must never hold it while waiting, nor ask for a second one.
func TestExclusiveConnection(t *testing.T) {
	h := newHarnessOpts(t, syncapi.Config{MaxTimeout: 10 * time.Second},
		exclusive(testdb.Options(t)))
	room := h.createRoom(alice)
	res := h.sync(alice, "", "")
	done := make(chan bool, 1)
	go func() {
		_, ok := h.longPoll(context.Background(), alice, res.NextBatch, room)
		done <- ok
	}()
	id := h.send(room, msg(alice, "while a poll waits"))[0]
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("poll did not deliver")
		}
	case <-time.After(9 * time.Second):
		t.Fatal("poll stuck on the single connection")
	}
	if p := h.messages(alice, room, url.Values{"dir": {"b"}, "limit": {"1"}}); !eq(ids(p.Chunk), []string{id}) {
		t.Errorf("messages: %v", ids(p.Chunk))
	}
}
