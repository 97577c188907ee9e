package syncapi_test

import (
	"context"
	"net/url"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
)

// roomWith creates a public room with a history visibility setting.
func (h *harness) roomWith(creator, visibility string) string {
	h.t.Helper()
	id, err := h.rs.CreateRoom(context.Background(), "", creator, nil, []roomserver.NewEvent{
		member(creator, creator, "join"),
		state(creator, spec.MRoomPowerLevels, "", map[string]any{"invite": 0}),
		state(creator, spec.MRoomJoinRules, "", map[string]string{"join_rule": "public"}),
		state(creator, spec.MRoomHistoryVisibility, "", map[string]string{"history_visibility": visibility}),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

// canRead asks /event and /context whether user may see an event; they
// must agree.
func (h *harness) canRead(user, room, eventID string) bool {
	h.t.Helper()
	base := "/_matrix/client/v3/rooms/" + url.PathEscape(room)
	evCode := h.get(dev(user), base+"/event/"+url.PathEscape(eventID), nil, nil)
	ctxCode := h.get(dev(user), base+"/context/"+url.PathEscape(eventID), url.Values{"limit": {"0"}}, nil)
	if (evCode == 200) != (ctxCode == 200) {
		h.t.Errorf("%s on %s: /event %d but /context %d", user, eventID, evCode, ctxCode)
	}
	return evCode == 200
}

func TestHistoryVisibility(t *testing.T) {
	type seen map[string]bool // event name → visible to bob
	cases := []struct {
		visibility string
		bob        seen
		carol      bool // a non-member may read the room
	}{
		{"joined", seen{"before": false, "invite": false, "invited": false, "join": true, "after": true}, false},
		{"invited", seen{"before": false, "invite": true, "invited": true, "join": true, "after": true}, false},
		{"shared", seen{"before": true, "invite": true, "invited": true, "join": true, "after": true}, false},
		{"world_readable", seen{"before": true, "invite": true, "invited": true, "join": true, "after": true}, true},
	}
	for _, c := range cases {
		t.Run(c.visibility, func(t *testing.T) {
			h := newHarness(t)
			room := h.roomWith(alice, c.visibility)
			ids := map[string]string{}
			ids["before"] = h.send(room, msg(alice, "before bob"))[0]
			ids["invite"] = h.send(room, member(alice, bob, "invite"))[0]
			ids["invited"] = h.send(room, msg(alice, "while bob is invited"))[0]
			ids["join"] = h.send(room, member(bob, bob, "join"))[0]
			ids["after"] = h.send(room, msg(alice, "with bob"))[0]

			tl := h.full(dev(bob), "", "filter", `{"room":{"timeline":{"limit":50}}}`).Rooms.Join[room].Timeline.Events
			for name, id := range ids {
				if got := contains(tl, id); got != c.bob[name] {
					t.Errorf("sync: bob sees %q: %v, want %v", name, got, c.bob[name])
				}
				if got := h.canRead(bob, room, id); got != c.bob[name] {
					t.Errorf("event/context: bob reads %q: %v, want %v", name, got, c.bob[name])
				}
				if got := h.canRead(carol, room, id); got != c.carol {
					t.Errorf("carol reads %q: %v, want %v", name, got, c.carol)
				}
			}
			// /context leaves out what bob may not see around what he may.
			var res struct {
				EventsBefore []clientEvent `json:"events_before"`
			}
			h.get(dev(bob), "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/context/"+url.PathEscape(ids["after"]),
				url.Values{"limit": {"20"}}, &res)
			for name, id := range ids {
				if name != "after" && contains(res.EventsBefore, id) != c.bob[name] {
					t.Errorf("context before: %q shown %v, want %v", name, !c.bob[name], c.bob[name])
				}
			}
		})
	}
}

func TestHistoryVisibilityChangesAndDepartures(t *testing.T) {
	h := newHarness(t)
	room := h.roomWith(alice, "shared")
	early := h.send(room, msg(alice, "shared history"))[0]
	change := h.send(room, state(alice, spec.MRoomHistoryVisibility, "", map[string]string{"history_visibility": "joined"}))[0]
	hidden := h.send(room, msg(alice, "members only"))[0]
	h.send(room, member(bob, bob, "join"))
	during := h.send(room, msg(alice, "bob is here"))[0]
	h.send(room, member(bob, bob, "leave"))
	after := h.send(room, msg(alice, "bob is gone"))[0]
	for _, c := range []struct {
		name, id string
		want     bool
	}{
		{"before the change: shared", early, true},
		{"the change itself: the more permissive", change, true},
		{"after the change, before joining", hidden, false},
		{"while joined", during, true},
		{"after leaving", after, false},
	} {
		if got := h.canRead(bob, room, c.id); got != c.want {
			t.Errorf("%s: bob reads it: %v, want %v", c.name, got, c.want)
		}
	}
	// The left room's final timeline shows what he saw, not the rest.
	var r syncResp
	h.get(dev(bob), "/_matrix/client/v3/sync", url.Values{"filter": {`{"room":{"include_leave":true,"timeline":{"limit":50}}}`}}, &r)
	tl := r.Rooms.Leave[room].Timeline.Events
	if !contains(tl, during) || contains(tl, hidden) || contains(tl, after) || !contains(tl, early) {
		t.Errorf("left room timeline: %v", ids(tl))
	}
}

func TestIgnoredUsers(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"), member(carol, carol, "join"))
	since := h.full(dev(alice), "").NextBatch
	pos, err := h.db.PutAccountData(context.Background(), alice, "", "m.ignored_user_list", []byte(`{"ignored_users":{"`+bob+`":{}}}`))
	if err != nil {
		t.Fatal(err)
	}
	h.sy.OnAccountData(alice, pos)

	fromBob := h.send(room, msg(bob, "ignored"))[0]
	fromCarol := h.send(room, msg(carol, "heard"))[0]
	bobState := h.send(room, state(bob, "m.room.member", bob, map[string]string{"membership": "join", "displayname": "B"}))[0]
	h.sy.OnTyping(room, bob, true, 60e9)
	h.sy.OnTyping(room, carol, true, 60e9)
	bobRoom := h.createRoom(bob)
	h.send(bobRoom, member(bob, alice, "invite"))
	carolRoom := h.createRoom(carol)
	h.send(carolRoom, member(carol, alice, "invite"))

	res := h.full(dev(alice), since)
	tl := res.Rooms.Join[room].Timeline.Events
	if contains(tl, fromBob) || !contains(tl, fromCarol) || !contains(tl, bobState) {
		t.Errorf("timeline: bob's message %v, carol's %v, bob's state %v", contains(tl, fromBob), contains(tl, fromCarol), contains(tl, bobState))
	}
	if got := typingOf(res.Rooms.Join[room].Ephemeral.Events); !slices.Equal(got, []string{carol}) {
		t.Errorf("typing: %v", got)
	}
	if _, ok := res.Rooms.Invite[bobRoom]; ok {
		t.Error("bob's invite delivered")
	}
	if _, ok := res.Rooms.Invite[carolRoom]; !ok {
		t.Error("carol's invite missing")
	}
	// /context leaves bob out too.
	var c struct {
		EventsBefore []clientEvent `json:"events_before"`
	}
	h.get(dev(alice), "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/context/"+url.PathEscape(bobState), url.Values{"limit": {"10"}}, &c)
	if contains(c.EventsBefore, fromBob) || !contains(c.EventsBefore, fromCarol) {
		t.Errorf("context: %v", ids(c.EventsBefore))
	}
}

// /messages follows the ignore list as it changes, page after page.
func TestMessagesFollowTheIgnoreList(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"))
	fromBob := h.send(room, msg(bob, "hello"))[0]
	page := func() []clientEvent {
		return h.messages(alice, room, url.Values{"dir": {"b"}, "limit": {"5"}}).Chunk
	}
	ignore := func(content string) {
		if _, err := h.db.PutAccountData(context.Background(), alice, "", "m.ignored_user_list", []byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range []struct {
		content string
		seen    bool
	}{
		{"", true},
		{`{"ignored_users":{"` + bob + `":{}}}`, false},
		{`{"ignored_users":{}}`, true},
		{`{"ignored_users":{"` + bob + `":{}}}`, false},
	} {
		if c.content != "" {
			ignore(c.content)
		}
		for range 2 { // the second page reads the list from the cache
			if got := contains(page(), fromBob); got != c.seen {
				t.Errorf("step %d: bob's message shown %v, want %v", i, got, c.seen)
			}
		}
	}
}
