package syncapi_test

import (
	"encoding/json"
	"net/url"
	"testing"

	"hearth/node/roomserver"
)

func TestMessagesBothDirections(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(alice, bob, "invite"), member(bob, bob, "join"))
	var sent []string
	for i := 0; i < 25; i++ {
		sender := alice
		if i%2 == 1 {
			sender = bob
		}
		sent = append(sent, h.send(room, msg(sender, "m"))[0])
	}

	// Backwards from the live end with no from: newest first.
	page := h.messages(alice, room, url.Values{"dir": {"b"}, "limit": {"5"}})
	want := []string{sent[24], sent[23], sent[22], sent[21], sent[20]}
	if !eq(ids(page.Chunk), want) || page.End == "" || page.Start == "" {
		t.Fatalf("first page %v end=%q", ids(page.Chunk), page.End)
	}
	// Forwards from that page's end: the same events, oldest first, and
	// no end token: that is the live end.
	fwd := h.messages(alice, room, url.Values{"dir": {"f"}, "from": {page.End}, "limit": {"5"}})
	if !eq(ids(fwd.Chunk), []string{sent[20], sent[21], sent[22], sent[23], sent[24]}) || fwd.End != "" {
		t.Errorf("forward page %v end=%q", ids(fwd.Chunk), fwd.End)
	}
	fwd = h.messages(alice, room, url.Values{"dir": {"f"}, "from": {page.End}, "limit": {"3"}})
	if !eq(ids(fwd.Chunk), []string{sent[20], sent[21], sent[22]}) || fwd.End == "" {
		t.Errorf("forward page %v end=%q", ids(fwd.Chunk), fwd.End)
	}
	fwd = h.messages(alice, room, url.Values{"dir": {"f"}, "from": {fwd.End}, "limit": {"3"}})
	if !eq(ids(fwd.Chunk), []string{sent[23], sent[24]}) || fwd.End != "" {
		t.Errorf("last forward page %v end=%q", ids(fwd.Chunk), fwd.End)
	}

	// Back-paginate the whole room: every event exactly once, then no end.
	seen := map[string]int{}
	total := 0
	for from := ""; ; {
		q := url.Values{"dir": {"b"}, "limit": {"4"}}
		if from != "" {
			q.Set("from", from)
		}
		p := h.messages(alice, room, q)
		for _, e := range p.Chunk {
			seen[e.EventID]++
			total++
		}
		if p.End == "" {
			break
		}
		from = p.End
	}
	if len(seen) != total || !hasAll(seen, sent) {
		t.Errorf("back-pagination: %d events, %d distinct", total, len(seen))
	}

	// A sync token works as from.
	res := h.sync(alice, "", "")
	p := h.messages(alice, room, url.Values{"dir": {"b"}, "from": {res.NextBatch}, "limit": {"1"}})
	if !eq(ids(p.Chunk), []string{sent[24]}) {
		t.Errorf("from a sync token: %v", ids(p.Chunk))
	}

	// Filters: senders, and lazy-loaded members of the chunk's senders.
	p = h.messages(alice, room, url.Values{"dir": {"b"}, "limit": {"6"},
		"filter": {`{"senders":["` + bob + `"],"lazy_load_members":true}`}})
	if len(p.Chunk) != 6 {
		t.Errorf("sender filter: %d events", len(p.Chunk))
	}
	for _, e := range p.Chunk {
		if e.Sender != bob {
			t.Errorf("sender filter let %s through", e.Sender)
		}
	}
	if len(p.State) != 1 || p.State[0].Type != "m.room.member" || *p.State[0].StateKey != bob {
		t.Errorf("lazy members: %+v", p.State)
	}
	p = h.messages(alice, room, url.Values{"dir": {"b"}, "limit": {"50"}, "filter": {`{"types":["m.room.member"]}`}})
	if len(p.Chunk) != 3 || p.End != "" {
		t.Errorf("type filter: %d events end=%q, want alice's join, bob's invite and join", len(p.Chunk), p.End)
	}
}

func hasAll(seen map[string]int, want []string) bool {
	for _, id := range want {
		if seen[id] != 1 {
			return false
		}
	}
	return true
}

func TestMessagesAccess(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"))
	seen := h.send(room, msg(alice, "while bob is here"))[0]
	h.send(room, member(bob, bob, "leave"))
	h.send(room, msg(alice, "after bob left"))

	var e matrixError
	if code := h.get(dev(carol), "/_matrix/client/v3/rooms/"+room+"/messages", url.Values{"dir": {"b"}}, &e); code != 403 || e.Code != "M_FORBIDDEN" {
		t.Errorf("non-member: %d %s", code, e.Code)
	}
	if code := h.get(dev(carol), "/_matrix/client/v3/rooms/!nope:x/messages", url.Values{"dir": {"b"}}, &e); code != 403 || e.Code != "M_FORBIDDEN" {
		t.Errorf("unknown room: %d %s", code, e.Code)
	}
	// A former member reads up to their leave, not after.
	p := h.messages(bob, room, url.Values{"dir": {"b"}, "limit": {"3"}})
	if len(p.Chunk) != 3 || p.Chunk[1].EventID != seen || p.Chunk[0].Type != "m.room.member" {
		t.Errorf("former member's newest events: %v", ids(p.Chunk))
	}
}

func TestContext(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	var sent []string
	for i := 0; i < 9; i++ {
		sent = append(sent, h.send(room, msg(alice, "m"))[0])
	}
	h.send(room, state(alice, "m.room.topic", "", map[string]string{"topic": "later"}))
	var res struct {
		Event        clientEvent   `json:"event"`
		EventsBefore []clientEvent `json:"events_before"`
		EventsAfter  []clientEvent `json:"events_after"`
		Start, End   string
		State        []clientEvent `json:"state"`
	}
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/context/" + url.PathEscape(sent[4])
	if code := h.get(dev(alice), path, url.Values{"limit": {"4"}}, &res); code != 200 {
		t.Fatalf("context: %d", code)
	}
	if res.Event.EventID != sent[4] || !eq(ids(res.EventsBefore), []string{sent[3], sent[2]}) ||
		!eq(ids(res.EventsAfter), []string{sent[5], sent[6]}) {
		t.Errorf("context: %s before %v after %v", res.Event.EventID, ids(res.EventsBefore), ids(res.EventsAfter))
	}
	if !hasType(res.State, "m.room.create") || hasType(res.State, "m.room.topic") {
		t.Errorf("state at the context: %v", res.State)
	}
	// The tokens continue the context both ways.
	back := h.messages(alice, room, url.Values{"dir": {"b"}, "from": {res.Start}, "limit": {"1"}})
	fwd := h.messages(alice, room, url.Values{"dir": {"f"}, "from": {res.End}, "limit": {"1"}})
	if !eq(ids(back.Chunk), []string{sent[1]}) || !eq(ids(fwd.Chunk), []string{sent[7]}) {
		t.Errorf("continuing: back %v fwd %v", ids(back.Chunk), ids(fwd.Chunk))
	}

	var e matrixError
	if code := h.get(dev(alice), "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/context/$nope", nil, &e); code != 404 || e.Code != "M_NOT_FOUND" {
		t.Errorf("unknown event: %d %s", code, e.Code)
	}
	other := h.createRoom(alice)
	if code := h.get(dev(alice), "/_matrix/client/v3/rooms/"+url.PathEscape(other)+"/context/"+url.PathEscape(sent[0]), nil, &e); code != 404 {
		t.Errorf("event of another room: %d %s", code, e.Code)
	}
	if code := h.get(dev(carol), path, nil, &e); code != 403 {
		t.Errorf("non-member: %d %s", code, e.Code)
	}
}

// TestMessagesLazyMembersAtTheChunk: the lazily loaded member events of a
// /messages page are the senders' as they were at that page, not now.
func TestMessagesLazyMembersAtTheChunk(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(alice, bob, "invite"))
	h.send(room, roomserver.NewEvent{Sender: bob, Type: "m.room.member", StateKey: &bob,
		Content: json.RawMessage(`{"membership":"join","displayname":"Bob then"}`)})
	old := h.send(room, msg(bob, "before the rename"))[0]
	h.send(room, roomserver.NewEvent{Sender: bob, Type: "m.room.member", StateKey: &bob,
		Content: json.RawMessage(`{"membership":"join","displayname":"Bob now"}`)})
	h.send(room, msg(bob, "after the rename"))

	lazy := `{"lazy_load_members":true,"types":["m.room.message"]}`
	now := h.messages(alice, room, url.Values{"dir": {"b"}, "limit": {"1"}, "filter": {lazy}})
	back := h.messages(alice, room, url.Values{"dir": {"b"}, "limit": {"1"}, "filter": {lazy}, "from": {now.End}})
	if len(back.Chunk) != 1 || back.Chunk[0].EventID != old {
		t.Fatalf("second page %v, want the message before the rename", ids(back.Chunk))
	}
	name := func(p messagesResp) string {
		for _, e := range p.State {
			if e.Type == "m.room.member" && *e.StateKey == bob {
				var c struct {
					Name string `json:"displayname"`
				}
				json.Unmarshal(e.Content, &c)
				return c.Name
			}
		}
		return ""
	}
	if got := name(now); got != "Bob now" {
		t.Errorf("newest page: bob is %q, want \"Bob now\"", got)
	}
	if got := name(back); got != "Bob then" {
		t.Errorf("page before the rename: bob is %q, want \"Bob then\"", got)
	}
}
