package roomserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/internal/testnet"
	"hearth/node/roomserver"
)

// FuzzSignedInput gives a room events of any type, state key and content
// that a member's server made with the right prev and auth events and
// signed: events that pass every check of their form and signatures and
// meet the auth rules with content no client would send. They come from
// @bob (b.test, power 0) into a.test's copy, or from the creator @alice
// (a.test, power 100) into b.test's. Whatever the rules make of each, the
// roomserver stores, soft-fails or refuses it without panicking, and the
// room goes on: its state reads, the creator can still send after bob's
// events, and the create event stays.
func FuzzSignedInput(f *testing.F) {
	keys := testnet.New()
	a, b, room := publicRoom(f, keys)
	alice, bob := "@alice:a.test", "@bob:b.test"
	ctx := context.Background()
	createID := stateID(f, a, room, spec.MRoomCreate, "")
	for _, c := range []struct {
		typ     string
		state   bool
		key     string
		content string
	}{
		{"m.room.message", false, "", `{"body":"x","msgtype":"m.text"}`},
		{"m.room.message", false, "", `{"body":{"nested":[1,2,{}]},"msgtype":5}`},
		{spec.MRoomMember, true, bob, `{"membership":"leave"}`},
		{spec.MRoomMember, true, bob, `{"membership":"join","displayname":{"x":1},"avatar_url":[]}`},
		{spec.MRoomMember, true, bob, `{"membership":5}`},
		{spec.MRoomMember, true, "@carol:b.test", `{"membership":"invite"}`},
		{spec.MRoomMember, true, alice, `{"membership":"ban"}`},
		{spec.MRoomMember, true, "not a user", `{"membership":"join"}`},
		{spec.MRoomPowerLevels, true, "", `{"users":{"@bob:b.test":100}}`},
		{spec.MRoomPowerLevels, true, "", `{"users":{"@bob:b.test":"100"},"ban":-1}`},
		{spec.MRoomJoinRules, true, "", `{"join_rule":["public"]}`},
		{spec.MRoomCreate, true, "", `{"room_version":"11"}`},
		{spec.MRoomName, true, "", `{"name":{"en":"x"}}`},
		{spec.MRoomRedaction, false, "", `{"redacts":"` + createID + `"}`},
		{spec.MRoomHistoryVisibility, true, "", `{"history_visibility":null}`},
		{"m.room.third_party_invite", true, "tok", `{"display_name":"x","public_keys":[{}]}`},
		{"m.room.message", true, "", `{}`},
	} {
		f.Add(false, c.typ, c.state, c.key, []byte(c.content))
		f.Add(true, c.typ, c.state, c.key, []byte(c.content))
	}
	sent := 0
	f.Fuzz(func(t *testing.T, admin bool, typ string, state bool, stateKey string, content []byte) {
		if !json.Valid(content) || len(content) > 8192 {
			return
		}
		// The room's creator (power 100) sends as well: its server's
		// events go into b.test's copy of the room.
		from, to, sender, origin := b, a, bob, "b.test"
		if admin {
			from, to, sender, origin = a, b, alice, "a.test"
		}
		ne := roomserver.NewEvent{Sender: sender, Type: typ, Content: content}
		if state {
			ne.StateKey = &stateKey
		}
		proto, version, err := to.rs.MakeEvent(ctx, room, ne)
		if err != nil {
			return // not an event anyone could make
		}
		ev, err := gomatrixserverlib.MustGetRoomVersion(version).NewEventBuilderFromProtoEvent(proto).
			Build(time.Now(), spec.ServerName(origin), "ed25519:p2p", from.key)
		if err != nil {
			return
		}
		res := to.rs.Input(ctx, []roomserver.InputEvent{{Origin: origin, RoomVersion: version, JSON: ev.JSON()}})
		if len(res) != 1 {
			t.Fatalf("%d results for one event", len(res))
		}
		if res[0].Err == nil && !res[0].SoftFailed {
			from.rs.Input(ctx, []roomserver.InputEvent{{Origin: origin, RoomVersion: version, JSON: ev.JSON()}})
		}
		sent++
		if admin {
			if _, err := to.rs.CurrentState(ctx, room); err != nil {
				t.Fatalf("after %s %q %s (%+v): the room's state: %v", typ, stateKey, content, res[0], err)
			}
		} else if _, err := a.rs.Send(ctx, room, msg(alice, fmt.Sprint("still here ", sent))); err != nil {
			t.Fatalf("after %s %q %s (%+v): the creator cannot send: %v", typ, stateKey, content, res[0], err)
		}
		for _, h := range []*harness{a, b} {
			if id := stateID(t, h, room, spec.MRoomCreate, ""); id != createID {
				t.Fatalf("after %s %q %s: the create event is %s, was %s", typ, stateKey, content, id, createID)
			}
		}
	})
}

// stateID is the ID of the room's current state event (typ, key) on h.
func stateID(t testing.TB, h *harness, roomID, typ, key string) string {
	t.Helper()
	ev, err := h.rs.StateEvent(context.Background(), roomID, typ, key)
	if err != nil || ev == nil {
		t.Fatalf("state %s %q: %v", typ, key, err)
	}
	return ev.EventID()
}
