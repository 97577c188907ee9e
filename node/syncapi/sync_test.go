package syncapi_test

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"hearth/node/clientevent"
	"hearth/node/roomserver"
)

// TestSeedWorkedExample is the seed notes' example: timeline
// [A, B, C, D, 1, 2, 3, D', 4, D”, 5, B', D”', D””, 6] (letters are
// state, numbers messages) at 1-based positions after the room's creation
// events.
func TestSeedWorkedExample(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	st := func(key, v string) roomserver.NewEvent {
		return state(alice, "org.example.state", key, map[string]string{"v": v})
	}
	seq := []struct {
		name string
		ev   roomserver.NewEvent
	}{
		{"A", st("a", "A")}, {"B", st("b", "B")}, {"C", st("c", "C")}, {"D", st("d", "D")},
		{"1", msg(alice, "1")}, {"2", msg(alice, "2")}, {"3", msg(alice, "3")},
		{"D'", st("d", "D'")}, {"4", msg(alice, "4")}, {"D''", st("d", "D''")},
		{"5", msg(alice, "5")}, {"B'", st("b", "B'")}, {"D'''", st("d", "D'''")},
		{"D''''", st("d", "D''''")}, {"6", msg(alice, "6")},
	}
	id := map[string]string{}
	var base int64
	for i, s := range seq {
		id[s.name] = h.send(room, s.ev)[0]
		p := h.pos(id[s.name])
		if i == 0 {
			base = p - 1
		}
		if p != base+int64(i)+1 {
			t.Fatalf("%s at position %d, want %d (one commit per event)", s.name, p, base+int64(i)+1)
		}
	}
	names := func(evs []clientEvent) []string {
		rev := map[string]string{}
		for n, i := range id {
			rev[i] = n
		}
		var out []string
		for _, e := range evs {
			if n, ok := rev[e.EventID]; ok {
				out = append(out, n)
			}
		}
		return out
	}
	limit5 := `{"room":{"timeline":{"limit":5}}}`

	res := h.sync(alice, tok(base+14), limit5)
	jr := res.Rooms.Join[room]
	if got := names(jr.Timeline.Events); !eq(got, []string{"6"}) {
		t.Errorf("since=14: timeline %v, want [6]", got)
	}
	if jr.Timeline.Limited || len(jr.State.Events) != 0 {
		t.Errorf("since=14: limited=%v state=%v, want false and none", jr.Timeline.Limited, names(jr.State.Events))
	}

	res = h.sync(alice, tok(base+9), limit5)
	jr = res.Rooms.Join[room]
	if got := names(jr.Timeline.Events); !eq(got, []string{"5", "B'", "D'''", "D''''", "6"}) {
		t.Errorf("since=9: timeline %v", got)
	}
	if !jr.Timeline.Limited {
		t.Error("since=9: timeline not limited though D'' was skipped")
	}
	if got := names(jr.State.Events); !eq(got, []string{"D''"}) {
		t.Errorf("since=9: state delta %v, want [D'']", got)
	}
	// The gap is exactly D'': /messages from prev_batch back to since.
	gap := h.messages(alice, room, url.Values{"dir": {"b"}, "from": {jr.Timeline.PrevBatch}, "to": {tok(base + 9)}})
	if got := names(gap.Chunk); !eq(got, []string{"D''"}) || gap.End != "" {
		t.Errorf("gap: %v end=%q, want [D''] and no end", got, gap.End)
	}

	// full_state: the state at the timeline's start in full.
	res = h.sync(alice, tok(base+9), limit5, "full_state", "true")
	got := names(res.Rooms.Join[room].State.Events)
	if !eq(got, []string{"A", "B", "C", "D''"}) {
		t.Errorf("since=9 full_state: state %v, want [A B C D'']", got)
	}
	if !hasType(res.Rooms.Join[room].State.Events, "m.room.create") {
		t.Error("full state lacks the create event")
	}

	// Initial sync with limit 5: the same timeline, the same state.
	res = h.sync(alice, "", limit5)
	jr = res.Rooms.Join[room]
	if got := names(jr.Timeline.Events); !eq(got, []string{"5", "B'", "D'''", "D''''", "6"}) || !jr.Timeline.Limited {
		t.Errorf("initial: timeline %v limited=%v", got, jr.Timeline.Limited)
	}
	if got := names(jr.State.Events); !eq(got, []string{"A", "B", "C", "D''"}) {
		t.Errorf("initial: state %v, want [A B C D'']", got)
	}
}

func hasType(evs []clientEvent, typ string) bool {
	for _, e := range evs {
		if e.Type == typ {
			return true
		}
	}
	return false
}

func TestInitialSync(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	room := h.createRoom(alice)
	small := h.createRoom(bob)
	h.send(small, member(bob, alice, "invite"))
	left := h.createRoom(bob)
	h.send(left, member(alice, alice, "join"))
	h.send(left, msg(alice, "before leaving"))
	h.send(left, member(alice, alice, "leave"))
	h.send(left, msg(bob, "never seen"))
	for i := 0; i < 12; i++ {
		h.send(room, msg(alice, "m"))
	}
	if _, err := h.db.PutAccountData(ctx, alice, "", "m.direct", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.PutAccountData(ctx, alice, room, "m.tag", []byte(`{"tags":{}}`)); err != nil {
		t.Fatal(err)
	}

	res := h.sync(alice, "", "")
	if res.Presence == nil || res.ToDevice == nil || res.DeviceLists == nil || res.AccountData == nil {
		t.Fatal("presence, to_device, device_lists and account_data must be present")
	}
	jr, ok := res.Rooms.Join[room]
	if !ok {
		t.Fatal("joined room missing")
	}
	if len(jr.Timeline.Events) != 10 || !jr.Timeline.Limited || jr.Timeline.PrevBatch == "" {
		t.Errorf("timeline: %d events limited=%v prev_batch=%q, want 10, true, a token",
			len(jr.Timeline.Events), jr.Timeline.Limited, jr.Timeline.PrevBatch)
	}
	for _, typ := range []string{"m.room.create", "m.room.member", "m.room.power_levels", "m.room.name"} {
		if !hasType(jr.State.Events, typ) {
			t.Errorf("state lacks %s", typ)
		}
	}
	if jr.Ephemeral == nil {
		t.Error("ephemeral missing")
	}
	if len(jr.AccountData.Events) != 1 || jr.AccountData.Events[0].Type != "m.tag" {
		t.Errorf("room account data: %+v", jr.AccountData.Events)
	}
	if len(res.AccountData.Events) != 1 || res.AccountData.Events[0].Type != "m.direct" {
		t.Errorf("global account data: %+v", res.AccountData.Events)
	}
	inv, ok := res.Rooms.Invite[small]
	if !ok {
		t.Fatal("invited room missing")
	}
	var sawCreate, sawName, sawInvite bool
	for _, e := range inv.InviteState.Events {
		switch {
		case e.Type == "m.room.create":
			sawCreate = true
		case e.Type == "m.room.name":
			sawName = true
		case e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == alice && e.Sender == bob:
			sawInvite = true
		case e.Type == "m.room.power_levels":
			t.Error("invite_state carries power levels")
		}
	}
	if !sawCreate || !sawName || !sawInvite {
		t.Errorf("invite_state create=%v name=%v invite=%v", sawCreate, sawName, sawInvite)
	}
	if _, ok := res.Rooms.Leave[left]; ok {
		t.Error("left room present without include_leave")
	}

	// A small room's timeline is not limited.
	res = h.sync(bob, "", "")
	if jr := res.Rooms.Join[small]; jr.Timeline.Limited || len(jr.Timeline.Events) == 0 {
		t.Errorf("small room: limited=%v events=%d", jr.Timeline.Limited, len(jr.Timeline.Events))
	}

	// include_leave shows the left room, up to the leave.
	res = h.sync(alice, "", `{"room":{"include_leave":true}}`)
	lr, ok := res.Rooms.Leave[left]
	if !ok {
		t.Fatal("left room missing with include_leave")
	}
	last := lr.Timeline.Events[len(lr.Timeline.Events)-1]
	if last.Type != "m.room.member" || last.Sender != alice {
		t.Errorf("left room's timeline ends with %s from %s, want alice's leave", last.Type, last.Sender)
	}
	for _, e := range lr.Timeline.Events {
		if strings.Contains(string(e.Content), "never seen") {
			t.Error("left room shows an event after the leave")
		}
	}
}

func TestIncrementalMemberships(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(bob)
	h.send(room, msg(bob, "hello"))
	other := h.createRoom(alice)
	first := h.sync(alice, "", "")
	if _, ok := first.Rooms.Join[room]; ok {
		t.Fatal("alice sees a room she is not in")
	}

	// An invite appears in rooms.invite.
	h.send(room, member(bob, alice, "invite"))
	res := h.sync(alice, first.NextBatch, "")
	if _, ok := res.Rooms.Invite[room]; !ok {
		t.Fatal("invite missing")
	}
	if _, ok := res.Rooms.Join[other]; ok {
		t.Error("an unchanged room is in an incremental sync")
	}

	// Joining: full state and limited.
	h.send(room, member(alice, alice, "join"))
	res = h.sync(alice, res.NextBatch, "")
	jr, ok := res.Rooms.Join[room]
	if !ok {
		t.Fatal("joined room missing")
	}
	// The whole room fits the timeline, so the state at its start is empty
	// and the create event is in the timeline.
	if !jr.Timeline.Limited || !hasType(jr.Timeline.Events, "m.room.create") || len(jr.State.Events) != 0 {
		t.Errorf("new join: limited=%v, create in timeline=%v", jr.Timeline.Limited, hasType(jr.Timeline.Events, "m.room.create"))
	}
	// A join of a room with more history than the timeline: its state.
	big := h.createRoom(bob)
	for i := 0; i < 12; i++ {
		h.send(big, msg(bob, "history"))
	}
	h.send(big, member(alice, alice, "join"))
	res = h.sync(alice, res.NextBatch, "")
	if jr := res.Rooms.Join[big]; !jr.Timeline.Limited || !hasType(jr.State.Events, "m.room.create") ||
		!hasType(jr.State.Events, "m.room.name") || len(jr.Timeline.Events) != 10 {
		t.Errorf("join of a big room: limited=%v timeline=%d state=%v", jr.Timeline.Limited, len(jr.Timeline.Events), jr.State.Events)
	}
	if _, ok := res.Rooms.Join[room]; ok {
		t.Error("an unchanged room is in an incremental sync")
	}
	if _, ok := res.Rooms.Invite[room]; ok {
		t.Error("joined room still in invite")
	}

	// A second join (a display name change) is not a new join.
	h.send(room, roomserver.NewEvent{Sender: alice, Type: "m.room.member", StateKey: sk(alice),
		Content: js(map[string]string{"membership": "join", "displayname": "Alice"})})
	res = h.sync(alice, res.NextBatch, "")
	jr = res.Rooms.Join[room]
	if jr.Timeline.Limited || len(jr.State.Events) != 0 || len(jr.Timeline.Events) != 1 {
		t.Errorf("duplicate join: limited=%v state=%d timeline=%d, want false, 0, 1",
			jr.Timeline.Limited, len(jr.State.Events), len(jr.Timeline.Events))
	}

	// Leaving: rooms.leave with the leave event.
	h.send(room, msg(bob, "still here?"))
	h.send(room, member(alice, alice, "leave"))
	h.send(room, msg(bob, "bye"))
	res = h.sync(alice, res.NextBatch, "")
	lr, ok := res.Rooms.Leave[room]
	if !ok {
		t.Fatal("left room missing")
	}
	if _, ok := res.Rooms.Join[room]; ok {
		t.Error("left room still in join")
	}
	if n := len(lr.Timeline.Events); n != 2 || lr.Timeline.Events[n-1].Type != "m.room.member" {
		t.Errorf("leave timeline: %+v", ids(lr.Timeline.Events))
	}
	// Nothing after: an empty incremental sync.
	res = h.sync(alice, res.NextBatch, "")
	if len(res.Rooms.Join)+len(res.Rooms.Leave)+len(res.Rooms.Invite) != 0 {
		t.Errorf("rooms after leaving: %+v", res.Rooms)
	}
}

// A long gap: the incremental sync is limited, and /messages from its
// prev_batch back to the old since returns exactly the missed events.
func TestGapFilledWithMessages(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(alice, bob, "invite"))
	h.send(room, member(bob, bob, "join"))
	res := h.sync(alice, "", "")
	var sent []string
	for i := 0; i < 45; i++ {
		sent = append(sent, h.send(room, msg(bob, "m"))[0])
		if i == 20 {
			sent = append(sent, h.send(room, state(alice, "m.room.topic", "", map[string]string{"topic": "gap"}))[0])
		}
	}
	inc := h.sync(alice, res.NextBatch, "")
	jr := inc.Rooms.Join[room]
	if !jr.Timeline.Limited || len(jr.Timeline.Events) != 10 {
		t.Fatalf("limited=%v events=%d", jr.Timeline.Limited, len(jr.Timeline.Events))
	}
	if len(jr.State.Events) != 1 || jr.State.Events[0].Type != "m.room.topic" {
		t.Errorf("state delta: %+v, want the topic change from the gap", jr.State.Events)
	}
	var got []string
	from := jr.Timeline.PrevBatch
	for pages := 0; from != ""; pages++ {
		if pages > 20 {
			t.Fatal("pagination does not end")
		}
		page := h.messages(alice, room, url.Values{"dir": {"b"}, "from": {from}, "to": {res.NextBatch}, "limit": {"7"}})
		for _, e := range page.Chunk {
			got = append([]string{e.EventID}, got...)
		}
		from = page.End
	}
	got = append(got, ids(jr.Timeline.Events)...)
	if !eq(got, sent) {
		t.Errorf("gap + timeline = %d events, want the %d sent, in order, once each", len(got), len(sent))
	}
}

func TestTransactionIDOnlyForSendingDevice(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	ev := msg(alice, "hi")
	ev.TxnDevice, ev.TxnID = clientevent.TxnDevice(alice, "DEV"), "txn1"
	id := h.send(room, ev)[0]
	check := func(token, want string) {
		t.Helper()
		var res syncResp
		h.get(token, "/_matrix/client/v3/sync", nil, &res)
		for _, e := range res.Rooms.Join[room].Timeline.Events {
			if e.EventID == id {
				if got, _ := e.Unsigned["transaction_id"].(string); got != want {
					t.Errorf("%s: transaction_id %q, want %q", token, got, want)
				}
				return
			}
		}
		t.Errorf("%s: event missing", token)
	}
	check(alice+"|DEV", "txn1")
	check(alice+"|OTHER", "")
}

func TestRedactedEventsServedRedacted(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	id := h.send(room, msg(alice, "secret"))[0]
	res := h.sync(alice, "", "") // caches the event
	if !strings.Contains(string(mustEvent(t, res.Rooms.Join[room].Timeline.Events, id).Content), "secret") {
		t.Fatal("message not served")
	}
	h.send(room, roomserver.NewEvent{Sender: alice, Type: "m.room.redaction", Redacts: id,
		Content: js(map[string]string{"redacts": id})})
	for _, r := range []syncResp{h.sync(alice, "", "")} {
		if e := mustEvent(t, r.Rooms.Join[room].Timeline.Events, id); strings.Contains(string(e.Content), "secret") {
			t.Error("sync serves a redacted event unredacted")
		}
	}
	page := h.messages(alice, room, url.Values{"dir": {"b"}})
	if e := mustEvent(t, page.Chunk, id); strings.Contains(string(e.Content), "secret") {
		t.Error("/messages serves a redacted event unredacted")
	}
}

func mustEvent(t *testing.T, evs []clientEvent, id string) clientEvent {
	t.Helper()
	for _, e := range evs {
		if e.EventID == id {
			return e
		}
	}
	t.Fatalf("event %s missing", id)
	return clientEvent{}
}

func TestSyncFilters(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	room := h.createRoom(alice)
	other := h.createRoom(alice)
	h.send(room, member(alice, bob, "invite"), member(bob, bob, "join"))
	h.send(room, member(alice, carol, "invite"), member(carol, carol, "join"))
	h.send(room, msg(bob, "from bob"), msg(carol, "from carol"),
		state(alice, "m.room.topic", "", map[string]string{"topic": "t"}), msg(bob, "again"))
	h.db.PutAccountData(ctx, alice, "", "m.direct", []byte(`{}`))
	h.db.PutAccountData(ctx, alice, "", "org.example.x", []byte(`{}`))

	res := h.sync(alice, "", `{"room":{"timeline":{"types":["m.room.message"],"not_senders":["`+carol+`"]}}}`)
	for _, e := range res.Rooms.Join[room].Timeline.Events {
		if e.Type != "m.room.message" || e.Sender == carol {
			t.Errorf("timeline filter let through %s from %s", e.Type, e.Sender)
		}
	}
	if n := len(res.Rooms.Join[room].Timeline.Events); n != 2 {
		t.Errorf("filtered timeline has %d events, want 2", n)
	}

	res = h.sync(alice, "", `{"room":{"rooms":["`+other+`"]}}`)
	if _, ok := res.Rooms.Join[room]; ok || len(res.Rooms.Join) != 1 {
		t.Errorf("room filter: rooms %v", res.Rooms.Join)
	}

	res = h.sync(alice, "", `{"room":{"state":{"types":["m.room.*"],"not_types":["m.room.member"]}}}`)
	st := res.Rooms.Join[room].State.Events
	if hasType(st, "m.room.member") || !hasType(st, "m.room.create") {
		t.Errorf("state filter: %v", st)
	}

	res = h.sync(alice, "", `{"room":{"timeline":{"limit":2},"state":{"lazy_load_members":true}}}`)
	var members []string
	for _, e := range res.Rooms.Join[room].State.Events {
		if e.Type == "m.room.member" {
			members = append(members, *e.StateKey)
		}
	}
	// The timeline is [topic, "again" from bob]: bob's member event, and
	// alice's own; not carol's.
	if len(members) != 2 || strings.Contains(strings.Join(members, ","), carol) {
		t.Errorf("lazy-loaded members %v, want bob and alice", members)
	}

	res = h.sync(alice, "", `{"account_data":{"types":["m.direct"]}}`)
	if len(res.AccountData.Events) != 1 || res.AccountData.Events[0].Type != "m.direct" {
		t.Errorf("account data filter: %+v", res.AccountData.Events)
	}

	// A stored filter, by ID.
	fid, err := h.db.PutFilter(ctx, alice, []byte(`{"room":{"timeline":{"limit":1}}}`))
	if err != nil {
		t.Fatal(err)
	}
	res = h.sync(alice, "", jsNum(fid))
	if n := len(res.Rooms.Join[room].Timeline.Events); n != 1 {
		t.Errorf("stored filter: %d timeline events, want 1", n)
	}
}

func jsNum(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// A rejected invite shows up in rooms.leave with the rejection alone: the
// user never joined, so the room's history is not theirs to read.
func TestRejectedInviteShowsNoHistory(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(bob)
	res := h.sync(alice, "", "")
	h.send(room, member(bob, alice, "invite"))
	h.send(room, msg(bob, "private"))
	reject := h.send(room, member(alice, alice, "leave"))[0]
	res = h.sync(alice, res.NextBatch, "")
	lr, ok := res.Rooms.Leave[room]
	if !ok {
		t.Fatal("rejected invite not in rooms.leave")
	}
	if !eq(ids(lr.Timeline.Events), []string{reject}) || len(lr.State.Events) != 0 {
		t.Errorf("rejected invite: timeline %v state %d, want only the rejection", ids(lr.Timeline.Events), len(lr.State.Events))
	}
	var e matrixError
	if code := h.get(dev(alice), "/_matrix/client/v3/rooms/"+room+"/messages", url.Values{"dir": {"b"}}, &e); code != 403 {
		t.Errorf("/messages after a rejected invite: %d", code)
	}
}

// A limited incremental sync sends the state that changed in the gap; with
// lazy loading, member changes only of the timeline's senders.
func TestIncrementalStateDeltaAndLazyMembers(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"), member(carol, carol, "join"))
	res := h.sync(alice, "", "")
	h.send(room, roomserver.NewEvent{Sender: carol, Type: "m.room.member", StateKey: sk(carol),
		Content: js(map[string]string{"membership": "join", "displayname": "Carol"})})
	h.send(room, state(alice, "m.room.name", "", map[string]string{"name": "Renamed"}))
	for i := 0; i < 12; i++ {
		h.send(room, msg(bob, "m"))
	}
	keysOf := func(evs []clientEvent) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e.Type+"|"+*e.StateKey)
		}
		return out
	}
	plain := h.sync(alice, res.NextBatch, "").Rooms.Join[room]
	if got := keysOf(plain.State.Events); !eq(got, []string{"m.room.member|" + carol, "m.room.name|"}) {
		t.Errorf("delta: %v", got)
	}
	lazy := h.sync(alice, res.NextBatch, `{"room":{"state":{"lazy_load_members":true}}}`).Rooms.Join[room]
	got := strings.Join(keysOf(lazy.State.Events), ",")
	want := []string{"m.room.name|", "m.room.member|" + bob, "m.room.member|" + alice}
	if len(lazy.State.Events) != len(want) {
		t.Errorf("lazy delta: %s, want the name, bob's and alice's members", got)
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("lazy delta: %s lacks %s", got, w)
		}
	}
}
