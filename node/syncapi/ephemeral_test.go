package syncapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"testing"
	"time"

	"hearth/node/storage"
	"hearth/node/syncapi"
)

// fullSync is a /sync answer with the ephemeral parts a client reads.
type fullSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline  timelineResp `json:"timeline"`
			Ephemeral eventList    `json:"ephemeral"`
			Unread    *struct {
				Notify    int `json:"notification_count"`
				Highlight int `json:"highlight_count"`
			} `json:"unread_notifications"`
		} `json:"join"`
		Invite map[string]json.RawMessage `json:"invite"`
	} `json:"rooms"`
	Presence    eventList `json:"presence"`
	ToDevice    eventList `json:"to_device"`
	DeviceLists struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
	OTKCounts map[string]int `json:"device_one_time_keys_count"`
	Fallback  []string       `json:"device_unused_fallback_key_types"`
}

// full syncs as token ("user|device"); extra are query pairs.
func (h *harness) full(token, since string, extra ...string) fullSync {
	h.t.Helper()
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	var res fullSync
	if code := h.get(token, "/_matrix/client/v3/sync", q, &res); code != 200 {
		h.t.Fatalf("sync as %s: status %d", token, code)
	}
	return res
}

// until long-polls as token from since until ok accepts an answer (each
// answer moves since on), failing after a bounded wait.
func (h *harness) until(token, since string, ok func(fullSync) bool) fullSync {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		res := h.full(token, since, "timeout", "2000")
		if ok(res) {
			return res
		}
		since = res.NextBatch
	}
	h.t.Fatalf("%s: the awaited sync answer never came", token)
	return fullSync{}
}

// account creates a user with devices (to-device messages need them).
func (h *harness) account(user string, devices ...string) {
	h.t.Helper()
	ctx := context.Background()
	if _, err := h.db.CreateAccount(ctx, storage.NewAccount{UserID: user}); err != nil && !errors.Is(err, storage.ErrExists) {
		h.t.Fatal(err)
	}
	for _, d := range devices {
		if _, err := h.db.CreateDevice(ctx, user, storage.NewDevice{DeviceID: d, TokenHash: user + "/" + d}); err != nil {
			h.t.Fatal(err)
		}
	}
}

// typingOf returns the typing users of a room's ephemeral events (nil: no
// m.typing event).
func typingOf(evs []clientEvent) []string {
	for _, e := range evs {
		if e.Type == "m.typing" {
			var c struct {
				UserIDs []string `json:"user_ids"`
			}
			json.Unmarshal(e.Content, &c)
			if c.UserIDs == nil {
				c.UserIDs = []string{}
			}
			return c.UserIDs
		}
	}
	return nil
}

// receiptsOf flattens m.receipt events to "type event user thread".
func receiptsOf(evs []clientEvent) []string {
	var out []string
	for _, e := range evs {
		if e.Type != "m.receipt" {
			continue
		}
		var c map[string]map[string]map[string]struct {
			TS       int64  `json:"ts"`
			ThreadID string `json:"thread_id"`
		}
		json.Unmarshal(e.Content, &c)
		for ev, types := range c {
			for typ, users := range types {
				for u, r := range users {
					out = append(out, typ+" "+ev+" "+u+" "+r.ThreadID)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestTyping(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"))
	other := h.createRoom(carol)
	bobSince := h.full(dev(bob), "").NextBatch
	carolSince := h.full(dev(carol), "").NextBatch

	steps := []struct {
		name   string
		action func()
		want   []string // bob's view; nil: no m.typing at all
	}{
		{"alice starts", func() { h.sy.OnTyping(room, alice, true, time.Minute) }, []string{alice}},
		{"bob starts too", func() { h.sy.OnTyping(room, bob, true, time.Minute) }, []string{alice, bob}},
		{"a refresh changes nothing", func() { h.sy.OnTyping(room, alice, true, time.Minute) }, nil},
		{"alice stops", func() { h.sy.OnTyping(room, alice, false, 0) }, []string{bob}},
		{"stopping twice changes nothing", func() { h.sy.OnTyping(room, alice, false, 0) }, nil},
		{"a remote user", func() { h.sy.ReceiveTyping(room, "@zed:elsewhere", true) }, []string{bob, "@zed:elsewhere"}},
		{"typing elsewhere", func() { h.sy.OnTyping(other, carol, true, time.Minute) }, nil},
	}
	for _, st := range steps {
		st.action()
		res := h.full(dev(bob), bobSince)
		if got := typingOf(res.Rooms.Join[room].Ephemeral.Events); !eq(got, st.want) {
			t.Errorf("%s: bob sees typing %v, want %v", st.name, got, st.want)
		}
		bobSince = res.NextBatch
	}
	// An initial sync shows who types now; carol sees only her room.
	if got := typingOf(h.full(dev(bob), "").Rooms.Join[room].Ephemeral.Events); !eq(got, []string{bob, "@zed:elsewhere"}) {
		t.Errorf("initial sync: typing %v", got)
	}
	res := h.full(dev(carol), carolSince)
	if _, ok := res.Rooms.Join[room]; ok {
		t.Error("carol sees typing of a room she is not in")
	}
	if got := typingOf(res.Rooms.Join[other].Ephemeral.Events); !eq(got, []string{carol}) {
		t.Errorf("carol's room: typing %v", got)
	}
	// An ephemeral filter without m.typing leaves it out.
	h.sy.OnTyping(room, bob, false, 0)
	res = h.full(dev(bob), bobSince, "filter", `{"room":{"ephemeral":{"types":["m.receipt"]}}}`)
	if got := typingOf(res.Rooms.Join[room].Ephemeral.Events); got != nil {
		t.Errorf("filtered out typing still sent: %v", got)
	}
	// Typing ends by itself after its timeout.
	h.sy.OnTyping(room, alice, true, 50*time.Millisecond)
	h.until(dev(bob), bobSince, func(r fullSync) bool {
		got := typingOf(r.Rooms.Join[room].Ephemeral.Events)
		return got != nil && !slices.Contains(got, alice)
	})
}

func TestReceipts(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"))
	ev1 := h.send(room, msg(alice, "one"))[0]
	ev2 := h.send(room, msg(alice, "two"))[0]
	aliceSince := h.full(dev(alice), "").NextBatch
	bobSince := h.full(dev(bob), "").NextBatch

	steps := []struct {
		name        string
		action      func()
		alice, bob  []string // receipts each sees in this step
		bobNoChange bool
	}{
		{"public read receipt", func() { h.sy.OnReceipt(room, bob, "m.read", ev2, "") },
			[]string{"m.read " + ev2 + " " + bob + " "}, []string{"m.read " + ev2 + " " + bob + " "}, false},
		{"private receipt: only its owner", func() { h.sy.OnReceipt(room, alice, "m.read.private", ev2, "") },
			[]string{"m.read.private " + ev2 + " " + alice + " "}, nil, true},
		{"threaded receipt", func() { h.sy.OnReceipt(room, alice, "m.read", ev1, ev1) },
			[]string{"m.read " + ev1 + " " + alice + " " + ev1}, []string{"m.read " + ev1 + " " + alice + " " + ev1}, false},
		{"an older event does not move a receipt back", func() { h.sy.OnReceipt(room, bob, "m.read", ev1, "") },
			nil, nil, true},
		{"a remote user's receipt needs them joined", func() {
			if err := h.sy.ReceiveReceipt(context.Background(), room, "@zed:elsewhere", ev2, "", 5); err != nil {
				t.Fatal(err)
			}
		}, nil, nil, true},
	}
	for _, st := range steps {
		st.action()
		a := h.full(dev(alice), aliceSince)
		b := h.full(dev(bob), bobSince)
		if got := receiptsOf(a.Rooms.Join[room].Ephemeral.Events); !eq(got, st.alice) {
			t.Errorf("%s: alice sees %v, want %v", st.name, got, st.alice)
		}
		if got := receiptsOf(b.Rooms.Join[room].Ephemeral.Events); !eq(got, st.bob) {
			t.Errorf("%s: bob sees %v, want %v", st.name, got, st.bob)
		}
		if _, ok := b.Rooms.Join[room]; st.bobNoChange && ok {
			t.Errorf("%s: bob's sync shows the room", st.name)
		}
		aliceSince, bobSince = a.NextBatch, b.NextBatch
	}
	// An initial sync carries every receipt the user may see.
	got := receiptsOf(h.full(dev(bob), "").Rooms.Join[room].Ephemeral.Events)
	want := []string{"m.read " + ev1 + " " + alice + " " + ev1, "m.read " + ev2 + " " + bob + " "}
	slices.Sort(want)
	if !eq(got, want) {
		t.Errorf("initial sync receipts %v, want %v", got, want)
	}
	// m.fully_read is room account data: it arrives as such.
	pos, err := h.db.PutAccountData(context.Background(), bob, room, "m.fully_read", []byte(`{"event_id":"`+ev2+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	h.sy.OnAccountData(bob, pos)
	var r syncResp
	h.get(dev(bob), "/_matrix/client/v3/sync", url.Values{"since": {bobSince}}, &r)
	if ad := r.Rooms.Join[room].AccountData.Events; len(ad) != 1 || ad[0].Type != "m.fully_read" {
		t.Errorf("fully read marker: %+v", ad)
	}
}

func presenceOf(evs []clientEvent, user string) map[string]any {
	for _, e := range evs {
		if e.Type == "m.presence" && e.Sender == user {
			var c map[string]any
			json.Unmarshal(e.Content, &c)
			return c
		}
	}
	return nil
}

func TestPresence(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"))
	h.createRoom(carol)
	bobSince := h.full(dev(bob), "", "set_presence", "offline").NextBatch
	carolSince := h.full(dev(carol), "", "set_presence", "offline").NextBatch

	steps := []struct {
		name   string
		action func()
		want   map[string]any // what bob sees of alice (nil: nothing)
	}{
		{"a sync makes alice online", func() { h.full(dev(alice), "") },
			map[string]any{"presence": "online", "currently_active": true}},
		{"syncing again changes nothing", func() { h.full(dev(alice), "") }, nil},
		{"set_presence=offline leaves it", func() { h.full(dev(alice), "", "set_presence", "offline") }, nil},
		{"set_presence=unavailable", func() { h.full(dev(alice), "", "set_presence", "unavailable") },
			map[string]any{"presence": "unavailable", "currently_active": false}},
		{"PUT /presence with a status", func() { h.sy.OnPresence(alice, "online", "lunch") },
			map[string]any{"presence": "online", "status_msg": "lunch", "currently_active": true}},
	}
	for _, st := range steps {
		st.action()
		res := h.full(dev(bob), bobSince, "set_presence", "offline")
		got := presenceOf(res.Presence.Events, alice)
		if (got == nil) != (st.want == nil) {
			t.Errorf("%s: bob sees %v, want %v", st.name, got, st.want)
		}
		for k, v := range st.want {
			if got[k] != v {
				t.Errorf("%s: %s = %v, want %v", st.name, k, got[k], v)
			}
		}
		if got != nil {
			if _, ok := got["last_active_ago"].(float64); !ok {
				t.Errorf("%s: no last_active_ago in %v", st.name, got)
			}
		}
		bobSince = res.NextBatch
	}
	// Carol shares no room with alice: she never sees her presence.
	if got := presenceOf(h.full(dev(carol), carolSince, "set_presence", "offline").Presence.Events, alice); got != nil {
		t.Errorf("carol sees alice's presence: %v", got)
	}
	// A remote user's presence, as their server sent it.
	h.send(room, member("@zed:elsewhere", "@zed:elsewhere", "join"))
	bobSince = h.full(dev(bob), bobSince, "set_presence", "offline").NextBatch
	h.sy.ReceivePresence("@zed:elsewhere", syncapi.PresenceStatus{Presence: "online", LastActiveAgo: 1000, CurrentlyActive: true})
	res := h.full(dev(bob), bobSince, "set_presence", "offline")
	if got := presenceOf(res.Presence.Events, "@zed:elsewhere"); got == nil || got["presence"] != "online" || got["last_active_ago"].(float64) < 1000 {
		t.Errorf("remote presence: %v", got)
	}
	// The initial sync has everyone's current presence; a filter can drop it.
	if got := presenceOf(h.full(dev(bob), "", "set_presence", "offline").Presence.Events, alice); got == nil || got["status_msg"] != "lunch" {
		t.Errorf("initial sync presence: %v", got)
	}
	if evs := h.full(dev(bob), "", "set_presence", "offline", "filter", `{"presence":{"types":[]}}`).Presence.Events; len(evs) != 0 {
		t.Errorf("presence filtered out, yet %d events", len(evs))
	}
	if c, ok := h.sy.PresenceContent(alice); !ok || !json.Valid(c) {
		t.Errorf("presence content: %s %v", c, ok)
	}
}

func TestPresenceTimesOut(t *testing.T) {
	h := newHarnessCfg(t, syncapi.Config{MaxTimeout: 10 * time.Second, PresenceOfflineAfter: 30 * time.Millisecond, PresenceIdleAfter: time.Hour})
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"))
	bobSince := h.full(dev(bob), "", "set_presence", "offline").NextBatch
	h.full(dev(alice), "")
	// Alice stops syncing: she goes offline, and bob hears of it.
	h.until(dev(bob), bobSince, func(r fullSync) bool {
		p := presenceOf(r.Presence.Events, alice)
		return p != nil && p["presence"] == "offline"
	})
}

func TestPresenceIdlesAndComesBack(t *testing.T) {
	h := newHarnessCfg(t, syncapi.Config{MaxTimeout: 10 * time.Second, PresenceOfflineAfter: time.Hour, PresenceIdleAfter: 300 * time.Millisecond})
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"))
	bobSince := h.full(dev(bob), "", "set_presence", "offline").NextBatch
	h.full(dev(alice), "")
	is := func(state string) func(fullSync) bool {
		return func(r fullSync) bool {
			p := presenceOf(r.Presence.Events, alice)
			return p != nil && p["presence"] == state
		}
	}
	bobSince = h.until(dev(bob), bobSince, is("unavailable")).NextBatch
	// Activity (typing) brings her back online.
	h.sy.OnTyping(room, alice, true, time.Minute)
	h.until(dev(bob), bobSince, is("online"))
}

// Each stream wakes a waiting long-poll of a user it concerns, and only
// theirs.
func TestLongPollsWakeOnlyWhoCares(t *testing.T) {
	h := newHarness(t)
	h.account(alice, "DEV")
	h.account(bob, "DEV", "DEV2")
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"))
	ev := h.send(room, msg(alice, "hi"))[0]
	carolRoom := h.createRoom(carol)
	ctx := context.Background()
	cases := []struct {
		name   string
		action func()
		woken  []string // of alice, bob, bob2 (bob's other device), carol
	}{
		{"typing", func() { h.sy.OnTyping(room, alice, true, time.Minute) }, []string{"alice", "bob", "bob2"}},
		{"receipt", func() { h.sy.OnReceipt(room, bob, "m.read", ev, "") }, []string{"alice", "bob", "bob2"}},
		{"private receipt", func() { h.sy.OnReceipt(room, alice, "m.read.private", ev, "") }, []string{"alice"}},
		{"to-device", func() {
			if err := h.sy.SendToDevice(ctx, alice, "DEV", "m.test", "w1", map[string]map[string]json.RawMessage{bob: {"DEV2": json.RawMessage(`{}`)}}); err != nil {
				t.Fatal(err)
			}
		}, []string{"bob2"}},
		{"presence", func() { h.sy.OnPresence(alice, "unavailable", "") }, []string{"alice", "bob", "bob2"}},
		{"device list", func() {
			if err := h.sy.DeviceListChanged(ctx, alice, []string{"DEV"}, false); err != nil {
				t.Fatal(err)
			}
		}, []string{"alice", "bob", "bob2"}},
		{"typing in carol's room", func() { h.sy.OnTyping(carolRoom, carol, true, time.Minute) }, []string{"carol"}},
	}
	for _, c := range cases {
		tokens := map[string]string{}
		for who, tok := range map[string]string{"alice": dev(alice), "bob": dev(bob), "bob2": bob + "|DEV2", "carol": dev(carol)} {
			tokens[who] = h.full(tok, "", "set_presence", "offline").NextBatch
		}
		waiters := map[string]func() bool{}
		var dones []func()
		for who, spec := range map[string]struct {
			user, device string
			rooms        []string
		}{"alice": {alice, "DEV", []string{room}}, "bob": {bob, "DEV", []string{room}}, "bob2": {bob, "DEV2", []string{room}}, "carol": {carol, "DEV", []string{carolRoom}}} {
			woken, done := h.sy.Waiter(spec.user, spec.device, spec.rooms, tokens[who])
			waiters[who] = woken
			dones = append(dones, done)
		}
		c.action()
		var got []string
		for who, woken := range waiters {
			if woken() {
				got = append(got, who)
			}
		}
		slices.Sort(got)
		if !eq(got, c.woken) {
			t.Errorf("%s woke %v, want %v", c.name, got, c.woken)
		}
		for _, d := range dones {
			d()
		}
	}
}

// A real long-poll returns as soon as each stream has news for it.
func TestLongPollReturnsForEachStream(t *testing.T) {
	h := newHarness(t)
	h.account(alice, "DEV")
	h.account(bob, "DEV")
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"))
	ev := h.send(room, msg(alice, "hi"))[0]
	ctx := context.Background()
	cases := []struct {
		name   string
		action func()
		got    func(fullSync) bool
	}{
		{"typing", func() { h.sy.OnTyping(room, alice, true, time.Minute) },
			func(r fullSync) bool { return typingOf(r.Rooms.Join[room].Ephemeral.Events) != nil }},
		{"receipt", func() { h.sy.OnReceipt(room, alice, "m.read", ev, "") },
			func(r fullSync) bool { return len(receiptsOf(r.Rooms.Join[room].Ephemeral.Events)) > 0 }},
		{"to-device", func() {
			h.sy.SendToDevice(ctx, alice, "DEV", "m.test", "l1", map[string]map[string]json.RawMessage{bob: {"DEV": json.RawMessage(`{"a":1}`)}})
		}, func(r fullSync) bool { return len(r.ToDevice.Events) == 1 }},
		{"presence", func() { h.sy.OnPresence(alice, "online", "here") },
			func(r fullSync) bool { return presenceOf(r.Presence.Events, alice) != nil }},
		{"device list", func() { h.sy.DeviceListChanged(ctx, alice, []string{"DEV"}, false) },
			func(r fullSync) bool { return slices.Contains(r.DeviceLists.Changed, alice) }},
	}
	for _, c := range cases {
		since := h.full(dev(bob), "", "set_presence", "offline").NextBatch
		done := make(chan fullSync, 1)
		go func() {
			var r fullSync
			h.get(dev(bob), "/_matrix/client/v3/sync", url.Values{"since": {since}, "timeout": {"10000"}, "set_presence": {"offline"}}, &r)
			done <- r
		}()
		c.action()
		select {
		case r := <-done:
			if !c.got(r) {
				t.Errorf("%s: the poll answered without it: %+v", c.name, r)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: the poll never answered", c.name)
		}
	}
}
