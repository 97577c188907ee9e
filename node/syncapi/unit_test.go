package syncapi

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	tk := Token{Room: 12, AccountData: 3, Typing: 0, Receipt: 7, ToDevice: 1, Presence: 0, DeviceList: 99}
	got, err := ParseToken(tk.String())
	if err != nil || got != tk {
		t.Fatalf("round trip %q: %+v %v", tk.String(), got, err)
	}
	// Older tokens with fewer streams read as 0 for the rest.
	if got, err := ParseToken("s12_3"); err != nil || got != (Token{Room: 12, AccountData: 3}) {
		t.Errorf("short token: %+v %v", got, err)
	}
	for _, bad := range []string{"", "s", "s_", "s1_", "sx", "s+1", "s-1", "s1 2", "t1", "S1", "s1_2_3_4_5_6_7_8", "s1234567890123456789"} {
		if _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
	for tokStr, want := range map[string]int64{"t0": 0, "t42": 42, "s9_1": 9, "t-7": -7} {
		if got, err := parsePageToken(tokStr); err != nil || got != want {
			t.Errorf("parsePageToken(%q) = %d %v", tokStr, got, err)
		}
		if tokStr[0] == 't' && pageToken(want) != tokStr {
			t.Errorf("pageToken(%d) = %q, want %q", want, pageToken(want), tokStr)
		}
	}
	for _, bad := range []string{"", "t", "t-", "t--1", "t+1", "x5", "t5_1"} {
		if _, err := parsePageToken(bad); err == nil {
			t.Errorf("parsePageToken(%q) accepted", bad)
		}
	}
}

func TestGlobMatch(t *testing.T) {
	cases := []struct {
		p, s string
		ok   bool
	}{
		{"m.room.message", "m.room.message", true},
		{"m.room.*", "m.room.message", true},
		{"m.room.*", "m.roomy", false},
		{"*", "", true},
		{"*.member", "m.room.member", true},
		{"m.*.member", "m.room.member", true},
		{"m.*.member", "m.member", false},
		{"a*a", "a", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "acb", false},
	}
	for _, c := range cases {
		if globMatch(c.p, c.s) != c.ok {
			t.Errorf("globMatch(%q, %q) != %v", c.p, c.s, c.ok)
		}
	}
}

func woken(w *waiter) bool {
	select {
	case <-w.ch:
		return true
	default:
		return false
	}
}

func TestNotifierWakesOnlyInterestedWaiters(t *testing.T) {
	n := newNotifier()
	seen := Token{Room: 10}
	a := n.wait([]string{userKey("@a:x"), roomKey("!r1")}, seen, "")
	b := n.wait([]string{userKey("@b:x"), roomKey("!r2")}, seen, "")
	n.notify(roomKey("!r1"), func(t *Token) { t.Room = 11 })
	if !woken(a) || woken(b) {
		t.Fatalf("room event: a woken=%v b woken=%v", woken(a), woken(b))
	}
	n.notify(userKey("@b:x"), func(t *Token) { t.AccountData = 1 })
	if !woken(b) {
		t.Fatal("account data did not wake b")
	}
	n.done(a)
	n.done(b)
	for k, nk := range n.keys {
		if len(nk.waiters) != 0 {
			t.Errorf("key %s keeps %d waiters after done", k, len(nk.waiters))
		}
	}
	// A waiter whose read predates a change it has not seen wakes at once;
	// one that saw it does not.
	late := n.wait([]string{roomKey("!r1")}, Token{Room: 10}, "")
	current := n.wait([]string{roomKey("!r1")}, Token{Room: 11}, "")
	if !woken(late) || woken(current) {
		t.Errorf("late waiter woken=%v, current waiter woken=%v", woken(late), woken(current))
	}
	n.done(late)
	n.done(current)
}

func TestEventCacheRedaction(t *testing.T) {
	c := newEventCache(2)
	c.put(&event{NID: 1, ID: "$1"}, 5)
	c.put(&event{NID: 2, ID: "$2"}, 5)
	c.put(&event{NID: 3, ID: "$3"}, 5)
	if c.get(1) != nil || c.get(3) == nil {
		t.Fatal("LRU did not evict the oldest")
	}
	c.redacted("$3", 7)
	if c.get(3) != nil {
		t.Fatal("redacted event still cached")
	}
	// A read older than the redaction must not re-insert what it read.
	c.put(&event{NID: 3, ID: "$3"}, 6)
	if c.get(3) != nil {
		t.Error("stale read re-cached a redacted event")
	}
	c.put(&event{NID: 3, ID: "$3", Redacted: true}, 7)
	if e := c.get(3); e == nil || !e.Redacted {
		t.Error("fresh read not cached")
	}
}

func TestWithTxnID(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"content":{"unsigned":{}},"type":"x","unsigned":{}}`, `{"content":{"unsigned":{}},"type":"x","unsigned":{"transaction_id":"t\"1"}}`},
		{`{"type":"x","unsigned":{"age":1}}`, `{"type":"x","unsigned":{"transaction_id":"t\"1","age":1}}`},
	} {
		ev := &event{JSON: []byte(c.json), unsignedAt: len(c.json) - len(`{}}`)}
		if c.json[len(c.json)-3] != '{' {
			ev.unsignedAt = len(`{"type":"x","unsigned":`)
		}
		if got := string(ev.withTxnID(`t"1`)); got != c.want {
			t.Errorf("withTxnID: %s, want %s", got, c.want)
		}
	}
}

// The hand-written encoders must say what encoding/json would say of the
// response structs.
func TestEncodersMatchEncodingJSON(t *testing.T) {
	ev := json.RawMessage(`{"content":{"body":"x \"q\""},"type":"m.room.message","unsigned":{}}`)
	res := newSyncResponse()
	res.NextBatch = "s1_2_3_4_5_6_7"
	res.Rooms.Join["!a:x"] = &joinedRoom{State: eventList{Events: []json.RawMessage{ev}},
		Timeline:  timeline{Events: []json.RawMessage{ev, ev}, Limited: true, PrevBatch: "t4"},
		Ephemeral: newEventList(), AccountData: newEventList()}
	res.Rooms.Join["!b\":x"] = &joinedRoom{State: newEventList(), Timeline: timeline{Events: []json.RawMessage{}},
		Ephemeral: newEventList(), AccountData: eventList{Events: []json.RawMessage{ev}}}
	res.Rooms.Invite["!c:x"] = &invitedRoom{InviteState: eventList{Events: []json.RawMessage{ev}}}
	res.Rooms.Leave["!d:x"] = &leftRoom{State: newEventList(), Timeline: timeline{Events: []json.RawMessage{ev}}, AccountData: newEventList()}
	res.Rooms.Knock["!e:x"] = &knockedRoom{KnockState: newEventList()}
	res.AccountData.Events = append(res.AccountData.Events, ev)
	res.DeviceLists.Changed = append(res.DeviceLists.Changed, "@u:x")
	same := func(name string, hand []byte, v any) {
		t.Helper()
		std, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		if err := json.Unmarshal(hand, &a); err != nil {
			t.Fatalf("%s: invalid JSON %s", name, hand)
		}
		json.Unmarshal(std, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s:\nhand %s\nstd  %s", name, hand, std)
		}
	}
	same("sync", res.appendJSON(nil), res)
	same("empty sync", newSyncResponse().appendJSON(nil), newSyncResponse())
	m := &messagesResponse{Chunk: []json.RawMessage{ev}, Start: "t9", End: "t3", State: []json.RawMessage{ev}}
	same("messages", m.appendJSON(nil), m)
	m = &messagesResponse{Chunk: []json.RawMessage{}, Start: "s1"}
	same("last messages", m.appendJSON(nil), m)
	c := &contextResponse{Event: ev, EventsBefore: []json.RawMessage{ev}, EventsAfter: []json.RawMessage{}, Start: "t1", End: "t2", State: []json.RawMessage{ev}}
	same("context", c.appendJSON(nil), c)
}

// TestNotifierTellsAnEcho: a request woken by an event its own user sent
// is told so (it then lets the fan-out go first); one woken by another's
// event, or by anything but an event, is not.
func TestNotifierTellsAnEcho(t *testing.T) {
	n := newNotifier()
	seen := Token{Room: 10}
	mine := n.wait([]string{roomKey("!r")}, seen, "@a:x")
	theirs := n.wait([]string{roomKey("!r")}, seen, "@b:x")
	n.notifyFrom(roomKey("!r"), "@a:x", func(t *Token) { t.Room = 11 })
	if !woken(mine) || !woken(theirs) || !mine.echo || theirs.echo {
		t.Errorf("a's event: a woken=%v echo=%v, b woken=%v echo=%v", woken(mine), mine.echo, woken(theirs), theirs.echo)
	}
	typing := n.wait([]string{roomKey("!r")}, Token{Room: 11}, "@a:x")
	n.notify(roomKey("!r"), func(t *Token) { t.Typing = 1 })
	if !woken(typing) || typing.echo {
		t.Errorf("typing: woken=%v echo=%v", woken(typing), typing.echo)
	}
}
