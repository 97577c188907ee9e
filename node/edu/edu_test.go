package edu_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/internal/testnet/testnode"
)

// network is whole nodes in one process (see testnode).
type network struct{ *testnode.Network }

type hnode struct{ *testnode.Server }

func newNetwork(t testing.TB) network { return network{testnode.New(t)} }

func (n network) add() *hnode { return &hnode{n.Add()} }

// user is a logged-in client of one node, with its sync position.
type user struct {
	*testnode.Client
	since string
}

func (h *hnode) register(t testing.TB, name string) *user {
	u := &user{Client: h.Register(t, name, "")}
	u.since = u.sync("").NextBatch
	return u
}

type event struct {
	EventID string          `json:"event_id"`
	Type    string          `json:"type"`
	Sender  string          `json:"sender"`
	Content json.RawMessage `json:"content"`
}

type syncRes struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []event `json:"events"`
			} `json:"timeline"`
			Ephemeral struct {
				Events []event `json:"events"`
			} `json:"ephemeral"`
		} `json:"join"`
	} `json:"rooms"`
	Presence struct {
		Events []event `json:"events"`
	} `json:"presence"`
	ToDevice struct {
		Events []event `json:"events"`
	} `json:"to_device"`
	DeviceLists struct {
		Changed []string `json:"changed"`
	} `json:"device_lists"`
}

func (u *user) sync(since string, extra ...string) syncRes {
	u.T.Helper()
	q := url.Values{"set_presence": {"offline"}}
	if since != "" {
		q.Set("since", since)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	var res syncRes
	u.Do("GET", "/sync?"+q.Encode(), nil, &res)
	return res
}

// await long-polls until ok accepts an answer (bounded), moving the
// user's position past everything read.
func (u *user) await(what string, ok func(syncRes) bool) syncRes {
	u.T.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		res := u.sync(u.since, "timeout", "2000")
		u.since = res.NextBatch
		if ok(res) {
			return res
		}
	}
	u.T.Fatalf("%s never saw %s", u.ID, what)
	return syncRes{}
}

// sharedRoom: creator makes a public room on its server home, and joiner
// joins it through home.
func sharedRoom(creator *user, home *hnode, joiner *user) string {
	creator.T.Helper()
	var created struct {
		RoomID string `json:"room_id"`
	}
	creator.Do("POST", "/createRoom", map[string]any{"preset": "public_chat"}, &created)
	joiner.Do("POST", "/join/"+url.PathEscape(created.RoomID)+"?server_name="+url.QueryEscape(home.Name), map[string]any{}, nil)
	return created.RoomID
}

func typingIn(res syncRes, room string) []string {
	for _, e := range res.Rooms.Join[room].Ephemeral.Events {
		if e.Type == "m.typing" {
			var c struct {
				UserIDs []string `json:"user_ids"`
			}
			json.Unmarshal(e.Content, &c)
			return c.UserIDs
		}
	}
	return nil
}

func receiptIn(res syncRes, room, eventID, typ, from string) bool {
	for _, e := range res.Rooms.Join[room].Ephemeral.Events {
		if e.Type != "m.receipt" {
			continue
		}
		var c map[string]map[string]map[string]json.RawMessage
		json.Unmarshal(e.Content, &c)
		if _, ok := c[eventID][typ][from]; ok {
			return true
		}
	}
	return false
}

// TestEDUsFlowBetweenServers: typing, receipts, presence, to-device
// messages and device-list changes of users on one server reach the
// syncs of users on the other, both ways.
func TestEDUsFlowBetweenServers(t *testing.T) {
	net := newNetwork(t)
	a, b := net.add(), net.add()
	alice, bob := a.register(t, "alice"), b.register(t, "bob")
	room := sharedRoom(alice, a, bob)
	alice.await("bob's join", func(r syncRes) bool {
		for _, e := range r.Rooms.Join[room].Timeline.Events {
			if e.Type == "m.room.member" && e.Sender == bob.ID {
				return true
			}
		}
		return false
	})
	bob.since = bob.sync("").NextBatch
	esc := url.PathEscape

	steps := []struct {
		name   string
		action func()
		who    *user
		saw    func(syncRes) bool
	}{
		{"alice types", func() {
			alice.Do("PUT", "/rooms/"+esc(room)+"/typing/"+esc(alice.ID), map[string]any{"typing": true, "timeout": 30000}, nil)
		}, bob, func(r syncRes) bool { return slices.Contains(typingIn(r, room), alice.ID) }},
		{"alice stops typing", func() {
			alice.Do("PUT", "/rooms/"+esc(room)+"/typing/"+esc(alice.ID), map[string]any{"typing": false}, nil)
		}, bob, func(r syncRes) bool { t := typingIn(r, room); return t != nil && !slices.Contains(t, alice.ID) }},
		{"bob types", func() {
			bob.Do("PUT", "/rooms/"+esc(room)+"/typing/"+esc(bob.ID), map[string]any{"typing": true, "timeout": 30000}, nil)
		}, alice, func(r syncRes) bool { return slices.Contains(typingIn(r, room), bob.ID) }},
	}
	for _, st := range steps {
		st.action()
		st.who.await(st.name, st.saw)
	}

	// Receipts: bob's private one stays home, his public one travels.
	var sent struct {
		EventID string `json:"event_id"`
	}
	alice.Do("PUT", "/rooms/"+esc(room)+"/send/m.room.message/r1", map[string]string{"msgtype": "m.text", "body": "read me"}, &sent)
	bob.await("alice's message", func(r syncRes) bool {
		for _, e := range r.Rooms.Join[room].Timeline.Events {
			if e.EventID == sent.EventID {
				return true
			}
		}
		return false
	})
	bob.Do("POST", "/rooms/"+esc(room)+"/receipt/m.read.private/"+esc(sent.EventID), map[string]any{}, nil)
	bob.Do("POST", "/rooms/"+esc(room)+"/receipt/m.read/"+esc(sent.EventID), map[string]any{}, nil)
	res := alice.await("bob's receipt", func(r syncRes) bool { return receiptIn(r, room, sent.EventID, "m.read", bob.ID) })
	if receiptIn(res, room, sent.EventID, "m.read.private", bob.ID) {
		t.Error("bob's private receipt reached alice's server")
	}
	alice.Do("POST", "/rooms/"+esc(room)+"/receipt/m.read/"+esc(sent.EventID), map[string]any{"thread_id": "main"}, nil)
	bob.await("alice's threaded receipt", func(r syncRes) bool { return receiptIn(r, room, sent.EventID, "m.read", alice.ID) })

	// Presence: alice's status reaches bob, and bob's GET reads it.
	alice.Do("PUT", "/presence/"+esc(alice.ID)+"/status", map[string]string{"presence": "online", "status_msg": "on a/b"}, nil)
	bob.await("alice's presence", func(r syncRes) bool {
		for _, e := range r.Presence.Events {
			var c struct {
				Presence  string `json:"presence"`
				StatusMsg string `json:"status_msg"`
			}
			json.Unmarshal(e.Content, &c)
			if e.Sender == alice.ID && c.Presence == "online" && c.StatusMsg == "on a/b" {
				return true
			}
		}
		return false
	})
	var p struct {
		Presence string `json:"presence"`
	}
	bob.Do("GET", "/presence/"+esc(alice.ID)+"/status", nil, &p)
	if p.Presence != "online" {
		t.Errorf("bob's GET of alice's presence: %q", p.Presence)
	}

	// To-device: to one device of a remote user, then to all of them.
	for i, dev := range []string{bob.Device, "*"} {
		body := map[string]any{"messages": map[string]any{bob.ID: map[string]any{dev: map[string]any{"n": i}}}}
		alice.Do("PUT", fmt.Sprintf("/sendToDevice/m.test/td%d", i), body, nil)
		alice.Do("PUT", fmt.Sprintf("/sendToDevice/m.test/td%d", i), body, nil) // a retry: not sent twice
		got := bob.await("a to-device message", func(r syncRes) bool { return len(r.ToDevice.Events) > 0 })
		if len(got.ToDevice.Events) != 1 || got.ToDevice.Events[0].Sender != alice.ID || got.ToDevice.Events[0].Type != "m.test" {
			t.Errorf("to-device %d: %+v", i, got.ToDevice.Events)
		}
	}
	// The other way, and without a retry showing up again later.
	body := map[string]any{"messages": map[string]any{alice.ID: map[string]any{alice.Device: map[string]any{"n": "b"}}}}
	bob.Do("PUT", "/sendToDevice/m.test/back", body, nil)
	alice.await("bob's to-device message", func(r syncRes) bool { return len(r.ToDevice.Events) == 1 && r.ToDevice.Events[0].Sender == bob.ID })
	bob.Do("PUT", "/sendToDevice/m.test/back", body, nil)

	// Device lists: bob's new keys make alice re-read them.
	keys := map[string]any{"device_keys": map[string]any{"user_id": bob.ID, "device_id": bob.Device,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2"}, "keys": map[string]string{"ed25519:" + bob.Device: "k"}, "signatures": map[string]any{}}}
	bob.Do("POST", "/keys/upload", keys, nil)
	alice.await("bob's device change", func(r syncRes) bool { return slices.Contains(r.DeviceLists.Changed, bob.ID) })
	var changes struct {
		Changed []string `json:"changed"`
	}
	bob.Do("GET", "/keys/changes?from="+url.QueryEscape(bob.since)+"&to="+url.QueryEscape(bob.sync(bob.since).NextBatch), nil, &changes)
	if !slices.Contains(changes.Changed, bob.ID) {
		t.Errorf("bob's /keys/changes: %v", changes.Changed)
	}

	// Nothing arrived twice: alice's to-device retry added nothing.
	if r := alice.sync(alice.since); len(r.ToDevice.Events) != 0 {
		t.Errorf("a retried to-device message arrived again: %+v", r.ToDevice.Events)
	}
}

// TestForgedEDUsDropped: a server speaks only for its own users, and
// typing or receipts count only from users joined to the room.
func TestForgedEDUsDropped(t *testing.T) {
	net := newNetwork(t)
	a, b := net.add(), net.add()
	alice, bob := a.register(t, "alice"), b.register(t, "bob")
	room := sharedRoom(alice, a, bob)
	bob.since = bob.sync("").NextBatch
	outsider := "@eve:" + a.Name // of A, but not in the room
	const elsewhere = "c.invalid"
	raw := func(v any) []byte { b, _ := json.Marshal(v); return b }
	forged := []struct {
		origin, typ string
		content     any
	}{
		{elsewhere, "m.typing", map[string]any{"room_id": room, "user_id": alice.ID, "typing": true}},
		{a.Name, "m.typing", map[string]any{"room_id": room, "user_id": outsider, "typing": true}},
		{elsewhere, "m.receipt", map[string]any{room: map[string]any{"m.read": map[string]any{alice.ID: map[string]any{"event_ids": []string{"$x"}, "data": map[string]any{"ts": 1}}}}}},
		{a.Name, "m.receipt", map[string]any{room: map[string]any{"m.read.private": map[string]any{alice.ID: map[string]any{"event_ids": []string{"$x"}, "data": map[string]any{"ts": 1}}}}}},
		{elsewhere, "m.presence", map[string]any{"push": []any{map[string]any{"user_id": alice.ID, "presence": "online", "last_active_ago": 1}}}},
		{elsewhere, "m.direct_to_device", map[string]any{"sender": alice.ID, "type": "m.test", "message_id": "f1",
			"messages": map[string]any{bob.ID: map[string]any{"*": map[string]any{}}}}},
		{elsewhere, "m.device_list_update", map[string]any{"user_id": alice.ID, "device_id": "X", "stream_id": 1}},
		{a.Name, "m.typing", []int{1, 2}}, // not even an object
	}
	for _, f := range forged {
		b.Node.EDU.OnEDU(f.origin, gomatrixserverlib.EDU{Type: f.typ, Origin: f.origin, Content: raw(f.content)})
	}
	r := bob.sync(bob.since)
	if jr, ok := r.Rooms.Join[room]; ok && len(jr.Ephemeral.Events) > 0 {
		t.Errorf("forged ephemeral events delivered: %+v", jr.Ephemeral.Events)
	}
	if len(r.Presence.Events) > 0 || len(r.ToDevice.Events) > 0 || len(r.DeviceLists.Changed) > 0 {
		t.Errorf("forged EDUs delivered: presence %v, to-device %v, device lists %v", r.Presence.Events, r.ToDevice.Events, r.DeviceLists.Changed)
	}
}

// TestBadEphemeralInput: malformed requests get the spec's errors, and
// leave nothing behind.
func TestBadEphemeralInput(t *testing.T) {
	net := newNetwork(t)
	a := net.add()
	alice := a.register(t, "alice")
	tok := alice.since
	esc := url.PathEscape
	cases := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"to-device: no messages", "PUT", "/sendToDevice/m.test/b1", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"to-device: bad user ID", "PUT", "/sendToDevice/m.test/b2", map[string]any{"messages": map[string]any{"alice": map[string]any{"D": map[string]any{}}}}, 400, "M_INVALID_PARAM"},
		{"to-device: content not an object", "PUT", "/sendToDevice/m.test/b3", map[string]any{"messages": map[string]any{alice.ID: map[string]any{"D": "x"}}}, 400, "M_BAD_JSON"},
		{"to-device: messages not a map", "PUT", "/sendToDevice/m.test/b4", map[string]any{"messages": []int{1}}, 400, "M_BAD_JSON"},
		{"key changes: malformed from", "GET", "/keys/changes?from=nope&to=" + url.QueryEscape(tok), nil, 400, "M_INVALID_PARAM"},
		{"key changes: malformed to", "GET", "/keys/changes?from=" + url.QueryEscape(tok) + "&to=s-3", nil, 400, "M_INVALID_PARAM"},
		{"key changes: no to", "GET", "/keys/changes?from=" + url.QueryEscape(tok), nil, 400, "M_MISSING_PARAM"},
		{"presence: unknown state", "PUT", "/presence/" + esc(alice.ID) + "/status", map[string]any{"presence": "busy"}, 400, "M_INVALID_PARAM"},
		{"sync: malformed since", "GET", "/sync?since=s1_x", nil, 400, "M_INVALID_PARAM"},
	}
	for _, c := range cases {
		var rd io.Reader
		if c.body != nil {
			b, _ := json.Marshal(c.body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(c.method, alice.Base+"/_matrix/client/v3"+c.path, rd)
		req.Header.Set("Authorization", "Bearer "+alice.Token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Code string `json:"errcode"`
		}
		json.NewDecoder(res.Body).Decode(&e)
		res.Body.Close()
		if res.StatusCode != c.status || e.Code != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, res.StatusCode, e.Code, c.status, c.code)
		}
	}
	if r := alice.sync(tok); len(r.ToDevice.Events) != 0 {
		t.Errorf("a refused to-device message was delivered: %+v", r.ToDevice.Events)
	}
}

// BenchmarkTypingAcrossServers: alice on A starts or stops typing; bob's
// long-poll on B returns with it (httptest federation on loopback).
func BenchmarkTypingAcrossServers(b *testing.B) {
	net := newNetwork(b)
	na, nb := net.add(), net.add()
	alice, bob := na.register(b, "alice"), nb.register(b, "bob")
	room := sharedRoom(alice, na, bob)
	alice.await("bob's join", func(r syncRes) bool { return len(r.Rooms.Join[room].Timeline.Events) > 0 })
	bob.since = bob.sync("").NextBatch
	path := "/rooms/" + url.PathEscape(room) + "/typing/" + url.PathEscape(alice.ID)
	var lat []time.Duration
	typing := false
	b.ResetTimer()
	for b.Loop() {
		typing = !typing
		t0 := time.Now()
		alice.Do("PUT", path, map[string]any{"typing": typing, "timeout": 30000}, nil)
		bob.await("alice's typing", func(r syncRes) bool {
			return typingIn(r, room) != nil && slices.Contains(typingIn(r, room), alice.ID) == typing
		})
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
