package syncapi_test

import (
	"context"
	"encoding/json"
	"net/url"
	"sort"
	"testing"
	"time"
)

// rawSync runs /sync for a user's default device and returns the answer
// as generic JSON, so tests can see exactly which fields each event has.
func (h *harness) rawSync(user, since, filter string) map[string]any {
	h.t.Helper()
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	var res map[string]any
	if code := h.get(dev(user), "/_matrix/client/v3/sync", q, &res); code != 200 {
		h.t.Fatalf("sync: status %d", code)
	}
	return res
}

// path walks generic JSON by object keys.
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

// events returns the event objects of an {"events": [...]} section.
func events(v any, keys ...string) []map[string]any {
	list, _ := path(v, append(keys, "events")...).([]any)
	out := make([]map[string]any, 0, len(list))
	for _, e := range list {
		m, _ := e.(map[string]any)
		out = append(out, m)
	}
	return out
}

// keysOf lists an object's keys, sorted.
func keysOfObj(v any) []string {
	m, _ := v.(map[string]any)
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestFilterEventFormat(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	id := h.send(room, msg(alice, "hello"))[0]
	for _, tc := range []struct {
		name, filter string
		federation   bool
	}{
		{"default is client", "", false},
		{"client", `{"event_format":"client"}`, false},
		{"federation", `{"event_format":"federation"}`, true},
	} {
		res := h.rawSync(alice, "", tc.filter)
		jr := path(res, "rooms", "join", room)
		tl := events(jr, "timeline")
		st := events(jr, "state")
		if len(tl) == 0 {
			t.Fatalf("%s: empty timeline", tc.name)
		}
		last := tl[len(tl)-1]
		for _, ev := range append(st, last) {
			_, hasAuth := ev["auth_events"]
			_, hasHashes := ev["hashes"]
			if hasAuth != tc.federation || hasHashes != tc.federation {
				t.Errorf("%s: %v has auth_events=%v hashes=%v", tc.name, ev["type"], hasAuth, hasHashes)
			}
			if ev["room_id"] != room {
				t.Errorf("%s: %v has room_id %v, want %s", tc.name, ev["type"], ev["room_id"], room)
			}
		}
		if path(last, "content", "body") != "hello" {
			t.Errorf("%s: last event content %v", tc.name, last["content"])
		}
		if !tc.federation && last["event_id"] != id {
			t.Errorf("%s: last event_id %v, want %s", tc.name, last["event_id"], id)
		}
	}
	// A bad format is refused, not ignored.
	q := url.Values{"filter": {`{"event_format":"xml"}`}}
	var e matrixError
	if code := h.get(dev(alice), "/_matrix/client/v3/sync", q, &e); code != 400 || e.Code != "M_INVALID_PARAM" {
		t.Errorf("event_format xml: %d %s", code, e.Code)
	}
}

func TestFilterEventFields(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, state(alice, "org.example.dotted", "", map[string]any{"a.b": 1, "a": map[string]any{"b": 2, "c": 3}}))
	h.sy.OnTyping(room, alice, true, time.Minute)
	ctx := context.Background()
	if _, err := h.db.PutAccountData(ctx, alice, "", "org.example.global", []byte(`{"x":1,"y":2}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.PutAccountData(ctx, alice, room, "org.example.room", []byte(`{"x":1,"y":2}`)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		fields  []string
		top     []string // keys of the dotted state event in the timeline
		content string   // its content, as JSON
		other   []string // keys of every state, ephemeral and account data event
	}{
		{"whole content", []string{"type", "content"}, []string{"content", "type"}, `{"a":{"b":2,"c":3},"a.b":1}`, []string{"content", "type"}},
		{"nested path", []string{"content.a.b"}, []string{"content"}, `{"a":{"b":2}}`, []string{}},
		{"escaped dot", []string{`content.a\.b`, "type"}, []string{"content", "type"}, `{"a.b":1}`, []string{"type"}},
		{"missing field", []string{"nope", "sender"}, []string{"sender"}, ``, nil},
		{"absent list: everything", nil, []string{"content", "event_id", "origin_server_ts", "room_id", "sender", "state_key", "type", "unsigned"}, `{"a":{"b":2,"c":3},"a.b":1}`, nil},
	} {
		fm := map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1}}}
		if tc.fields != nil {
			fm["event_fields"] = tc.fields
		}
		b, _ := json.Marshal(fm)
		f := string(b)
		res := h.rawSync(alice, "", f)
		jr := path(res, "rooms", "join", room)
		tl := events(jr, "timeline")
		if len(tl) != 1 {
			t.Fatalf("%s: timeline of %d events, want 1", tc.name, len(tl))
		}
		dotted := tl[0]
		if got := keysOfObj(dotted); !eq(got, tc.top) {
			t.Errorf("%s: timeline event keys %v, want %v", tc.name, got, tc.top)
		}
		if tc.content != "" {
			if got, _ := json.Marshal(dotted["content"]); string(got) != tc.content {
				t.Errorf("%s: content %s, want %s", tc.name, got, tc.content)
			}
		}
		if tc.other == nil {
			continue
		}
		sections := map[string][]map[string]any{
			"state":             events(jr, "state"),
			"ephemeral":         events(jr, "ephemeral"),
			"room account_data": events(jr, "account_data"),
			"account_data":      events(res, "account_data"),
		}
		for name, evs := range sections {
			if len(evs) == 0 {
				t.Errorf("%s: no %s events", tc.name, name)
			}
			for _, ev := range evs {
				if got := keysOfObj(ev); !eq(got, tc.other) {
					t.Errorf("%s: %s event keys %v, want %v", tc.name, name, got, tc.other)
				}
			}
		}
	}
}

func TestFilterPresenceAndEphemeral(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"), member(carol, carol, "join"))
	ev := h.send(room, msg(bob, "hi"))[0]
	h.sy.OnPresence(bob, "online", "")
	h.sy.OnPresence(carol, "online", "")
	h.sy.OnTyping(room, bob, true, time.Minute)
	h.sy.OnReceipt(room, carol, "m.read", ev, "")

	presenceOf := func(r fullSync) []string {
		var out []string
		for _, e := range r.Presence.Events {
			if e.Sender != alice {
				out = append(out, e.Sender)
			}
		}
		sort.Strings(out)
		return out
	}
	ephemeralOf := func(r fullSync) []string {
		var out []string
		for _, e := range r.Rooms.Join[room].Ephemeral.Events {
			out = append(out, e.Type)
		}
		sort.Strings(out)
		return out
	}
	for _, tc := range []struct {
		name, filter        string
		presence, ephemeral []string
		typing              []string // users in m.typing, when sent
	}{
		{"no filter", `{}`, []string{bob, carol}, []string{"m.receipt", "m.typing"}, []string{bob}},
		{"presence not_senders", `{"presence":{"not_senders":["` + bob + `"]}}`, []string{carol}, []string{"m.receipt", "m.typing"}, []string{bob}},
		{"presence senders", `{"presence":{"senders":["` + bob + `"]}}`, []string{bob}, []string{"m.receipt", "m.typing"}, []string{bob}},
		{"presence types", `{"presence":{"types":["m.other"]}}`, nil, []string{"m.receipt", "m.typing"}, []string{bob}},
		{"presence not_types", `{"presence":{"not_types":["m.*"]}}`, nil, []string{"m.receipt", "m.typing"}, []string{bob}},
		{"presence limit", `{"presence":{"limit":1}}`, []string{bob}, []string{"m.receipt", "m.typing"}, []string{bob}},
		{"ephemeral types", `{"room":{"ephemeral":{"types":["m.typing"]}}}`, []string{bob, carol}, []string{"m.typing"}, []string{bob}},
		{"ephemeral not_types", `{"room":{"ephemeral":{"not_types":["m.typing"]}}}`, []string{bob, carol}, []string{"m.receipt"}, nil},
		{"ephemeral not_senders", `{"room":{"ephemeral":{"not_senders":["` + bob + `","` + carol + `"]}}}`, []string{bob, carol}, []string{"m.typing"}, []string{}},
		{"ephemeral rooms", `{"room":{"ephemeral":{"rooms":["!elsewhere:x"]}}}`, []string{bob, carol}, nil, nil},
		{"ephemeral not_rooms", `{"room":{"ephemeral":{"not_rooms":["` + room + `"]}}}`, []string{bob, carol}, nil, nil},
		{"ephemeral limit", `{"room":{"ephemeral":{"limit":1}}}`, []string{bob, carol}, []string{"m.typing"}, []string{bob}},
	} {
		r := h.full(dev(alice), "", "filter", tc.filter)
		if tc.name == "presence limit" {
			// The limit counts every presence event, the user's own too.
			if n := len(r.Presence.Events); n != 1 {
				t.Errorf("%s: %d presence events, want 1", tc.name, n)
			}
		} else if got := presenceOf(r); !eq(got, tc.presence) {
			t.Errorf("%s: presence of %v, want %v", tc.name, got, tc.presence)
		}
		if got := ephemeralOf(r); !eq(got, tc.ephemeral) {
			t.Errorf("%s: ephemeral %v, want %v", tc.name, got, tc.ephemeral)
		}
		if tc.typing != nil {
			if got := typingOf(r.Rooms.Join[room].Ephemeral.Events); !eq(got, tc.typing) {
				t.Errorf("%s: typing %v, want %v", tc.name, got, tc.typing)
			}
		}
	}
}

func TestFilterAccountData(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	ctx := context.Background()
	for _, it := range []struct{ room, typ string }{
		{"", "org.example.a"}, {"", "org.example.b"}, {"", "m.direct"},
		{room, "org.example.r1"}, {room, "org.example.r2"},
	} {
		if _, err := h.db.PutAccountData(ctx, alice, it.room, it.typ, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	typesOf := func(evs []clientEvent) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e.Type)
		}
		sort.Strings(out)
		return out
	}
	all, allRoom := []string{"m.direct", "org.example.a", "org.example.b"}, []string{"org.example.r1", "org.example.r2"}
	for _, tc := range []struct {
		name, filter     string
		global, roomData []string
		globalCount      int // when > 0, only the count is checked
	}{
		{"no filter", `{}`, all, allRoom, 0},
		{"types", `{"account_data":{"types":["org.example.*"]}}`, []string{"org.example.a", "org.example.b"}, allRoom, 0},
		{"not_types", `{"account_data":{"not_types":["m.direct"]}}`, []string{"org.example.a", "org.example.b"}, allRoom, 0},
		{"limit", `{"account_data":{"limit":2}}`, nil, allRoom, 2},
		{"room types", `{"room":{"account_data":{"types":["org.example.r2"]}}}`, all, []string{"org.example.r2"}, 0},
		{"room not_rooms", `{"room":{"account_data":{"not_rooms":["` + room + `"]}}}`, all, nil, 0},
		{"room limit", `{"room":{"account_data":{"limit":1}}}`, all, nil, 0},
	} {
		res := h.sync(alice, "", tc.filter)
		if tc.globalCount > 0 {
			if n := len(res.AccountData.Events); n != tc.globalCount {
				t.Errorf("%s: %d global items, want %d", tc.name, n, tc.globalCount)
			}
		} else if got := typesOf(res.AccountData.Events); !eq(got, tc.global) {
			t.Errorf("%s: global %v, want %v", tc.name, got, tc.global)
		}
		got := typesOf(res.Rooms.Join[room].AccountData.Events)
		if tc.name == "room limit" {
			if len(got) != 1 {
				t.Errorf("%s: room items %v, want one", tc.name, got)
			}
		} else if !eq(got, tc.roomData) {
			t.Errorf("%s: room %v, want %v", tc.name, got, tc.roomData)
		}
	}
}

func TestFilterRedundantMembers(t *testing.T) {
	membersOf := func(r syncResp, room string) []string {
		var out []string
		for _, e := range r.Rooms.Join[room].State.Events {
			if e.Type == "m.room.member" {
				out = append(out, *e.StateKey)
			}
		}
		sort.Strings(out)
		return out
	}
	for _, tc := range []struct {
		name                   string
		redundant              bool
		initial, second, third []string // lazy-loaded members of each sync
	}{
		{"default: not resent", false, []string{alice, bob}, []string{carol}, nil},
		{"include_redundant_members", true, []string{alice, bob}, []string{alice, carol}, []string{alice, bob}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			room := h.createRoom(alice)
			h.send(room, member(bob, bob, "join"), member(carol, carol, "join"))
			h.send(room, msg(bob, "1"))
			b, _ := json.Marshal(map[string]any{"room": map[string]any{
				"timeline": map[string]any{"limit": 1},
				"state":    map[string]any{"lazy_load_members": true, "include_redundant_members": tc.redundant},
			}})
			f := string(b)
			r := h.sync(alice, "", f)
			if got := membersOf(r, room); !eq(got, tc.initial) {
				t.Errorf("initial: members %v, want %v", got, tc.initial)
			}
			// Carol (new to the client) speaks last: her member is due.
			h.send(room, msg(bob, "2"), msg(carol, "3"))
			r = h.sync(alice, r.NextBatch, f)
			if got := membersOf(r, room); !eq(got, tc.second) {
				t.Errorf("second: members %v, want %v", got, tc.second)
			}
			h.send(room, msg(bob, "4"))
			r = h.sync(alice, r.NextBatch, f)
			if got := membersOf(r, room); !eq(got, tc.third) {
				t.Errorf("third: members %v, want %v", got, tc.third)
			}
			// An initial sync starts the client over: everything again.
			r = h.sync(alice, "", f)
			if got := membersOf(r, room); !eq(got, []string{alice, bob}) {
				t.Errorf("new initial sync: members %v, want alice and bob", got)
			}
		})
	}
}
