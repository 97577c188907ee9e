package syncapi_test

import (
	"testing"

	"hearth/node/roomserver"
)

func ev(sender, typ string, content map[string]any) roomserver.NewEvent {
	return roomserver.NewEvent{Sender: sender, Type: typ, Content: js(content)}
}

func TestUnreadNotifications(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"), member(carol, carol, "join"),
		state(alice, "m.room.member", alice, map[string]string{"membership": "join", "displayname": "Alice Liddell"}),
		state(alice, "m.room.power_levels", "", map[string]any{"users": map[string]int{carol: 50}, "state_default": 0}))
	text := func(sender, body string) roomserver.NewEvent {
		return ev(sender, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
	}
	cases := []struct {
		name              string
		evs               []roomserver.NewEvent
		notify, highlight int
	}{
		{"a message", []roomserver.NewEvent{text(bob, "hello")}, 1, 0},
		{"three messages", []roomserver.NewEvent{text(bob, "a"), text(bob, "b"), text(bob, "c")}, 3, 0},
		{"her user name", []roomserver.NewEvent{text(bob, "hey alice, look")}, 1, 1},
		{"her display name", []roomserver.NewEvent{text(bob, "thanks Alice Liddell!")}, 1, 1},
		{"a name inside a word is no mention", []roomserver.NewEvent{text(bob, "malice")}, 1, 0},
		{"an intentional mention", []roomserver.NewEvent{ev(bob, "m.room.message", map[string]any{
			"msgtype": "m.text", "body": "hi", "m.mentions": map[string]any{"user_ids": []string{alice}}})}, 1, 1},
		{"m.mentions present turns off name matching", []roomserver.NewEvent{ev(bob, "m.room.message", map[string]any{
			"msgtype": "m.text", "body": "alice", "m.mentions": map[string]any{}})}, 1, 0},
		{"a notice", []roomserver.NewEvent{ev(bob, "m.room.message", map[string]any{"msgtype": "m.notice", "body": "alice"})}, 0, 0},
		{"an edit", []roomserver.NewEvent{ev(bob, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* fixed",
			"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": "$x"}})}, 0, 0},
		{"a reaction", []roomserver.NewEvent{ev(bob, "m.reaction", map[string]any{})}, 0, 0},
		{"a state change", []roomserver.NewEvent{state(bob, "m.room.topic", "", map[string]string{"topic": "alice"})}, 0, 0},
		{"encrypted", []roomserver.NewEvent{ev(bob, "m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2"})}, 1, 0},
		{"@room without the power", []roomserver.NewEvent{text(bob, "@room wake up")}, 1, 0},
		{"@room with the power", []roomserver.NewEvent{text(carol, "@room wake up")}, 1, 1},
		{"her own message reads the room", []roomserver.NewEvent{text(bob, "x"), text(alice, "read it"), text(bob, "y")}, 1, 0},
	}
	last := h.send(room, text(alice, "start"))[0]
	for _, c := range cases {
		h.sy.OnReceipt(room, alice, "m.read", last, "")
		since := h.full(dev(alice), "").NextBatch
		ids := h.send(room, c.evs...)
		last = ids[len(ids)-1]
		// Both an incremental and an initial sync count the same.
		for _, s := range []string{since, ""} {
			jr, ok := h.full(dev(alice), s).Rooms.Join[room]
			if !ok || jr.Unread == nil {
				t.Fatalf("%s: no unread_notifications", c.name)
			}
			if jr.Unread.Notify != c.notify || jr.Unread.Highlight != c.highlight {
				t.Errorf("%s (since %q): %d/%d, want %d/%d", c.name, s, jr.Unread.Notify, jr.Unread.Highlight, c.notify, c.highlight)
			}
		}
	}
	// Counts grow with each new event (from the cache), and a receipt,
	// even a private one, brings them back to zero.
	h.sy.OnReceipt(room, alice, "m.read", last, "")
	since := h.full(dev(alice), "").NextBatch
	for i := 1; i <= 3; i++ {
		h.send(room, text(bob, "more alice"))
		res := h.full(dev(alice), since)
		if u := res.Rooms.Join[room].Unread; u == nil || u.Notify != i || u.Highlight != i {
			t.Errorf("after %d more: %+v", i, u)
		}
		since = res.NextBatch
	}
	last = h.send(room, text(bob, "last"))[0]
	h.sy.OnReceipt(room, alice, "m.read.private", last, "")
	res := h.full(dev(alice), since)
	if u := res.Rooms.Join[room].Unread; u == nil || u.Notify != 0 || u.Highlight != 0 {
		t.Errorf("after a private receipt: %+v", u)
	}
	// A threaded receipt does not read the main timeline.
	h.send(room, text(bob, "one more"))
	thread := h.send(room, text(bob, "in a thread"))[0]
	h.sy.OnReceipt(room, alice, "m.read", thread, thread)
	if u := h.full(dev(alice), "").Rooms.Join[room].Unread; u == nil || u.Notify != 2 {
		t.Errorf("after a thread receipt: %+v", u)
	}
}

// Counts carried from sync to sync stay right whatever else moves: other
// rooms' events between syncs, more new events than the timeline shows,
// a room in the answer for a receipt alone, and a display name changed
// (mentions follow the current one). Each incremental answer agrees with
// an initial sync's count from scratch.
func TestUnreadCountsAcrossSyncs(t *testing.T) {
	h := newHarness(t)
	room, other := h.createRoom(alice), h.createRoom(alice)
	h.send(room, member(bob, bob, "join"),
		state(alice, "m.room.member", alice, map[string]string{"membership": "join", "displayname": "Mock Turtle"}))
	text := func(body string) roomserver.NewEvent {
		return ev(bob, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
	}
	since := h.full(dev(alice), "").NextBatch
	notify, highlight := 0, 0
	check := func(what string) {
		t.Helper()
		res := h.full(dev(alice), since)
		since = res.NextBatch
		for _, s := range []fullSync{res, h.full(dev(alice), "")} {
			jr, ok := s.Rooms.Join[room]
			if !ok || jr.Unread == nil || jr.Unread.Notify != notify || jr.Unread.Highlight != highlight {
				t.Fatalf("%s: %+v, want %d/%d", what, jr.Unread, notify, highlight)
			}
		}
	}
	h.send(room, text("one"))
	notify++
	check("a message")
	h.fill(other, alice, 5)
	h.send(room, text("two"))
	notify++
	check("a message after other rooms moved")
	for i := 0; i < 15; i++ {
		h.send(room, text("Mock Turtle"))
	}
	notify, highlight = notify+15, highlight+15
	check("more messages than the timeline holds")
	h.fill(other, alice, 3)
	three := h.send(room, text("three"))[0]
	h.sy.OnReceipt(room, bob, "m.read", three, "")
	notify++
	check("a message, then someone's receipt")
	h.send(other, msg(alice, "x"))
	h.sy.OnReceipt(room, bob, "m.read", three, "main")
	check("a receipt alone")
	// Her own member event reads the room.
	h.send(room, state(alice, "m.room.member", alice, map[string]string{"membership": "join", "displayname": "Queen of Hearts"}))
	h.send(room, text("Mock Turtle?"), text("Queen of Hearts!"))
	notify, highlight = 2, 1
	check("after a display name change")
}
