package syncapi_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"hearth/node/syncapi"
)

func roomIDs(r slidingResp) map[string]bool {
	out := map[string]bool{}
	for id := range r.Rooms {
		out[id] = true
	}
	return out
}

func rangeBody(end int) string {
	return fmt.Sprintf(`{"conn_id":"main","lists":{"all":{"ranges":[[0,%d]],"timeline_limit":1,
		"required_state":[["m.room.name",""]]}}}`, end)
}

// (a) Widening a list's range with the same pos sends the rooms newly
// inside it in full, and not the ones the connection already has.
func TestSlidingConnWidenRange(t *testing.T) {
	h := newHarness(t)
	srv := slider(h)
	ctx := context.Background()
	old1 := h.createRoom(alice)
	old2 := h.createRoom(alice)
	newest := h.createRoom(alice)
	_, first := slide(t, ctx, srv, dev(alice), "", "", rangeBody(0))
	if got := roomIDs(first); len(got) != 1 || !got[newest] {
		t.Fatalf("first window: %v", got)
	}
	code, wide := slide(t, ctx, srv, dev(alice), first.Pos, "", rangeBody(2))
	if code != 200 {
		t.Fatalf("widen: %d %+v", code, wide)
	}
	if got := roomIDs(wide); len(got) != 2 || !got[old1] || !got[old2] {
		t.Fatalf("widened window sent %v, want the two rooms new to it", got)
	}
	for id, rr := range wide.Rooms {
		if !rr.Initial || len(rr.RequiredState) != 1 || len(rr.Timeline) != 1 {
			t.Errorf("%s not sent in full: %+v", id, rr)
		}
	}
	// Now the connection has all three: nothing new, nothing sent.
	_, again := slide(t, ctx, srv, dev(alice), wide.Pos, "", rangeBody(2))
	if len(again.Rooms) != 0 {
		t.Errorf("rooms resent: %v", roomIDs(again))
	}
	// The earlier pos stays good (a retried request) and still knows
	// only the first room was sent.
	_, retry := slide(t, ctx, srv, dev(alice), first.Pos, "", rangeBody(2))
	if got := roomIDs(retry); len(got) != 2 || got[newest] {
		t.Errorf("retry of the first pos sent %v", got)
	}
}

// (b) A room the user leaves comes once with its leave; a room that
// drops out of every window is not sent, and when it comes back the
// connection gets what changed, not the whole room again.
func TestSlidingConnLeaveAndDropOut(t *testing.T) {
	h := newHarness(t)
	srv := slider(h)
	ctx := context.Background()
	stay := h.createRoom(alice)
	leave := h.createRoom(alice)
	sub := h.createRoom(alice)
	subBody := `{"conn_id":"c","lists":{"all":{"ranges":[[0,1]],"timeline_limit":3}},
		"room_subscriptions":{"` + sub + `":{"timeline_limit":3}}}`
	listOnly := `{"conn_id":"c","lists":{"all":{"ranges":[[0,0]],"timeline_limit":3}}}`
	h.send(stay, msg(alice, "stay newest"))
	_, first := slide(t, ctx, srv, dev(alice), "", "", subBody)
	if got := roomIDs(first); !got[stay] || !got[sub] {
		t.Fatalf("first: %v", got)
	}
	// Make leave part of the connection: a window of two, newest first.
	h.send(leave, msg(alice, "leave newest"))
	_, second := slide(t, ctx, srv, dev(alice), first.Pos, "", subBody)
	if !roomIDs(second)[leave] {
		t.Fatalf("second: %v", roomIDs(second))
	}

	leaveID := h.send(leave, member(alice, alice, "leave"))[0]
	code, res := slide(t, ctx, srv, dev(alice), second.Pos, "", subBody)
	if code != 200 {
		t.Fatalf("%d %+v", code, res)
	}
	lr, ok := res.Rooms[leave]
	if !ok || len(lr.Timeline) == 0 || lr.Timeline[len(lr.Timeline)-1].EventID != leaveID || lr.Initial {
		t.Fatalf("left room not reported with its leave: %+v", res.Rooms)
	}
	if res.Lists["all"].Count != 2 {
		t.Errorf("count after leave = %d, want 2", res.Lists["all"].Count)
	}
	_, after := slide(t, ctx, srv, dev(alice), res.Pos, "", subBody)
	if roomIDs(after)[leave] {
		t.Errorf("left room reported twice")
	}

	// sub drops out of every window, changes, then comes back.
	_, dropped := slide(t, ctx, srv, dev(alice), after.Pos, "", listOnly)
	if len(dropped.Rooms) != 0 {
		t.Errorf("dropping a subscription sent %v", roomIDs(dropped))
	}
	h.send(sub, msg(alice, "while away"))
	_, away := slide(t, ctx, srv, dev(alice), dropped.Pos, "", `{"conn_id":"c","lists":{"inv":{"ranges":[[0,5]],"filters":{"is_invite":true}}}}`)
	if len(away.Rooms) != 0 {
		t.Errorf("a room out of every window was sent: %v", roomIDs(away))
	}
	h.send(sub, msg(alice, "still away"))
	_, back := slide(t, ctx, srv, dev(alice), away.Pos, "", subBody)
	br, ok := back.Rooms[sub]
	if !ok || br.Initial || len(br.Timeline) != 2 || br.Limited {
		t.Errorf("returning room: %+v", back.Rooms)
	}
}

// (c) A pos the server does not know on this connection (another
// conn_id, an evicted connection, a restarted server) gets M_UNKNOWN_POS;
// starting over works.
func TestSlidingConnUnknownPos(t *testing.T) {
	h := newHarness(t)
	srv := slider(h)
	ctx := context.Background()
	h.createRoom(alice)
	body := func(conn string) string { return `{"conn_id":"` + conn + `","lists":{"a":{"ranges":[[0,0]]}}}` }
	_, first := slide(t, ctx, srv, dev(alice), "", "", body("c0"))

	cases := []struct {
		name, token, body string
	}{
		{"another connection's pos", dev(alice), body("other")},
		{"another device's pos", alice + "|OTHER", body("c0")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, r := slide(t, ctx, srv, c.token, first.Pos, "", c.body)
			if code != 400 || r.Errcode != "M_UNKNOWN_POS" {
				t.Errorf("got %d %s", code, r.Errcode)
			}
		})
	}

	t.Run("evicted", func(t *testing.T) {
		// More connections on the device than it may keep: the least
		// recently used (c0) goes.
		for i := 1; i <= 10; i++ {
			slide(t, ctx, srv, dev(alice), "", "", body(fmt.Sprint("c", i)))
		}
		code, r := slide(t, ctx, srv, dev(alice), first.Pos, "", body("c0"))
		if code != 400 || r.Errcode != "M_UNKNOWN_POS" {
			t.Errorf("got %d %s", code, r.Errcode)
		}
	})

	t.Run("restart", func(t *testing.T) {
		_, live := slide(t, ctx, srv, dev(alice), "", "", body("r"))
		sy2, err := syncapi.New(h.db, syncapi.Config{MaxTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sy2.Close)
		srv2 := httptest.NewServer(auth(sy2.HandleSlidingSync))
		t.Cleanup(srv2.Close)
		code, r := slide(t, ctx, srv2, dev(alice), live.Pos, "", body("r"))
		if code != 400 || r.Errcode != "M_UNKNOWN_POS" {
			t.Errorf("got %d %s", code, r.Errcode)
		}
		code, fresh := slide(t, ctx, srv2, dev(alice), "", "", body("r"))
		if code != 200 || len(fresh.Rooms) != 1 {
			t.Errorf("starting over: %d %+v", code, fresh)
		}
	})
}

// A room the connection holds goes again in full when the client asks
// for other required_state, even though nothing in it changed.
func TestSlidingConnRequiredStateChange(t *testing.T) {
	h := newHarness(t)
	srv := slider(h)
	ctx := context.Background()
	room := h.createRoom(alice)
	_, first := slide(t, ctx, srv, dev(alice), "", "", rangeBody(0))
	if !roomIDs(first)[room] {
		t.Fatalf("first window: %v", roomIDs(first))
	}
	_, same := slide(t, ctx, srv, dev(alice), first.Pos, "", rangeBody(0))
	if len(same.Rooms) != 0 {
		t.Fatalf("unchanged request resent %v", roomIDs(same))
	}
	more := `{"conn_id":"main","lists":{"all":{"ranges":[[0,0]],"timeline_limit":1,
		"required_state":[["m.room.name",""],["m.room.create",""]]}}}`
	_, got := slide(t, ctx, srv, dev(alice), same.Pos, "", more)
	rr, ok := got.Rooms[room]
	if !ok || !rr.Initial {
		t.Fatalf("after asking for more state the room was not resent in full: %+v", got.Rooms)
	}
	hasCreate := false
	for _, e := range rr.RequiredState {
		hasCreate = hasCreate || e.Type == "m.room.create"
	}
	if !hasCreate {
		t.Errorf("the newly required m.room.create is missing: %+v", rr.RequiredState)
	}
}
