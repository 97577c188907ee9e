package roomserver_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/sjson"

	"hearth/node/internal/testnet"
	"hearth/node/roomserver"
)

// agreeCase is an event from another server, and whether checkPlain
// must take it (plain) or leave it to gomatrixserverlib.
type agreeCase struct {
	name  string
	json  []byte
	plain bool
}

// agreeCases are events of one room version, good and bad, plain and
// not, as other servers could send them.
func agreeCases(t testing.TB, keys *testnet.Net, verImpl gomatrixserverlib.IRoomVersion) []agreeCase {
	a, b := newEventSigner(keys, "a.test"), newEventSigner(keys, "b.test")
	alice, bob := "@alice:a.test", "@bob:b.test"
	room := "!history:a.test"
	if verImpl.Version() == gomatrixserverlib.RoomVersionV12 {
		room = "!bnJCJs7ffzNqpaOH6u0OLUn1X5JMA6TYkrzn-Hd8Ke5"
	}
	ts := 1700000000000
	event := func(typ, sender string, stateKey *string, content any) map[string]any {
		ts++
		f := map[string]any{
			"room_id": room, "type": typ, "sender": sender, "content": content, "depth": 12, "origin_server_ts": ts,
			"prev_events": []string{"$bnJCJs7ffzNqpaOH6u0OLUn1X5JMA6TYkrzn-Hd8Ke4"}, "auth_events": []string{"$GVSOmVKPfQEqm6q0rSnNTmKi5dVZJYRH6qXrZqsu4vo"},
		}
		if stateKey != nil {
			f["state_key"] = *stateKey
		}
		return f
	}
	message := func() map[string]any {
		return event("m.room.message", alice, nil, map[string]any{"msgtype": "m.text", "body": "hello"})
	}
	with := func(f map[string]any, key string, v any) map[string]any {
		f[key] = v
		return f
	}
	without := func(f map[string]any, key string) map[string]any {
		delete(f, key)
		return f
	}
	edit := func(js []byte, from, to string) []byte {
		if !bytes.Contains(js, []byte(from)) {
			t.Fatalf("%q is not in %s", from, js)
		}
		return bytes.Replace(js, []byte(from), []byte(to), 1)
	}
	set := func(js []byte, key string, v any) []byte {
		out, err := sjson.SetBytes(js, key, v)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	sign := func(f map[string]any, by ...eventSigner) []byte { return signEvent(t, verImpl, f, by...) }
	good := sign(message(), a)

	return []agreeCase{
		{"message", good, true},
		{"message with odd strings and numbers", sign(event("m.room.message", alice, nil, map[string]any{
			"msgtype": "m.text", "body": "é ü 😀 <b>&amp;</b> \"quoted\" back\\slash \u2028 \u0001 \t",
			"n": []any{0, -1, 9007199254740991, -9007199254740991}, "nested": map[string]any{"z": map[string]any{}, "a": []any{"", nil, true}, "é": "key", "A": 1},
		}), a), true},
		{"room name", sign(event(spec.MRoomName, alice, sk(""), map[string]any{"name": "Room ☕"}), a), true},
		{"power levels", sign(event(spec.MRoomPowerLevels, alice, sk(""), map[string]any{"users": map[string]any{alice: 100}, "ban": 50}), a), true},
		{"restricted join rules", sign(event(spec.MRoomJoinRules, alice, sk(""), map[string]any{"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": "!other:a.test"}}}), a), true},
		{"redaction", sign(with(event(spec.MRoomRedaction, alice, nil, map[string]any{"redacts": "$GVSOmVKPfQEqm6q0rSnNTmKi5dVZJYRH6qXrZqsu4vo"}), "redacts", "$GVSOmVKPfQEqm6q0rSnNTmKi5dVZJYRH6qXrZqsu4vo"), a), true},
		{"signed extra keys", sign(with(with(message(), "origin", "a.test"), "x.custom-key", map[string]any{"k": []int{1, 2}}), a), true},
		{"signed by two servers", sign(message(), a, b), true},
		{"unsigned data", set(good, "unsigned", map[string]any{"age": 1234, "prev_content": map[string]any{"x": 1}}), true},
		{"keys servers must not send", set(set(set(set(good, "event_id", "$x"), "age_ts", 5), "outlier", true), "destinations", []string{"b.test"}), true},
		{"wire form not canonical", edit(edit(good, `"hello"`, `"h\u0065llo"`), `,"sender"`, ` ,  "sender"`), true},
		{"tampered content (redacted)", edit(good, `"hello"`, `"HELLO"`), true},
		{"key added after signing (redacted)", set(good, "x.added", "later"), true},
		{"no content hash (redacted)", sign(message(), a)[:0:0], true}, // filled in below
		{"content hash not base64 (redacted)", set(good, "hashes.sha256", "!!"), true},
		{"forged by another server", sign(message(), b), true},
		{"no signatures", set(good, "signatures", map[string]any{}), true},
		{"signature of another key", edit(good, `"`+string(testnet.KeyID)+`"`, `"ed25519:other"`), true},
		{"signatures not an object", set(good, "signatures", "x"), true},
		{"sender without a server", sign(event("m.room.message", "alice", nil, map[string]any{"body": "x"}), a), true},
		{"sender not a string", set(good, "sender", 5), false},
		{"type not a string", set(good, "type", []int{1}), false},
		{"no type", sign(without(message(), "type"), a), false},
		{"depth not a number", sign(with(message(), "depth", "12"), a), true},
		{"no prev events", sign(without(message(), "prev_events"), a), true},
		{"no room", sign(without(message(), "room_id"), a), true},
		{"room ID of a user", sign(with(message(), "room_id", alice), a), true},
		{"number too large", edit(good, `"depth":12`, `"depth":9007199254740992`), true},
		{"float", edit(good, `"depth":12`, `"depth":12.5`), true},
		{"state key too long", sign(event(spec.MRoomName, alice, sk(strings.Repeat("k", 300)), map[string]any{"name": "x"}), a), true},
		{"not JSON", []byte(`{"type":"m.room.message",`), false},
		{"not an object", []byte(`["type"]`), false},

		{"invite to a user of no server", sign(event(spec.MRoomMember, alice, sk("@bob"), map[string]any{"membership": "invite"}), a), true},
		{"membership not a string", sign(event(spec.MRoomMember, alice, sk(alice), map[string]any{"membership": 5}), a), true},
		{"membership given twice", edit(sign(event(spec.MRoomMember, bob, sk(bob), map[string]any{"membership": "leave"}), b), `"membership":"leave"`, `"membership":"leave","membership":"invite"`), true},
		{"member without a state key", sign(event(spec.MRoomMember, alice, nil, map[string]any{"membership": "join"}), a), false},
		{"member with an escaped state key", edit(sign(event(spec.MRoomMember, alice, sk(bob), map[string]any{"membership": "invite"}), a, b), `"state_key":"@bob`, `"state_key":"\u0040bob`), false},

		// Left to gomatrixserverlib.
		{"sender escaped", edit(good, `"sender":"@alice`, `"sender":"\u0040alice`), false},
		{"type escaped", edit(good, `"type":"m.room.message"`, `"type":"m.room.m\u0065mber"`), false},
		{"key escaped", edit(good, `"depth"`, `"d\u0065pth"`), false},
		{"type given twice", edit(good, `"type":"m.room.message"`, `"type":"m.room.message","type":"m.room.member"`), false},
		{"type in capitals", edit(good, `"type":"m.room.message"`, `"type":"m.room.message","TYPE":"m.room.member"`), false},
		{"type with a Kelvin sign", edit(good, `"type":"m.room.message"`, `"type":"m.room.message","ſender":"@bob:b.test"`), false},
		{"underscore key", set(good, "_room_version", "10"), false},
		{"many keys", sign(func() map[string]any {
			f := message()
			for i := range 40 {
				f[fmt.Sprint("x", i)] = i
			}
			return f
		}(), a), false},
		{"join", sign(event(spec.MRoomMember, alice, sk(alice), map[string]any{"membership": "join"}), a), true},
		{"invite signed by both", sign(event(spec.MRoomMember, alice, sk(bob), map[string]any{"membership": "invite"}), a, b), true},
		{"invite not signed by the invitee's server", sign(event(spec.MRoomMember, alice, sk(bob), map[string]any{"membership": "invite"}), a), true},
		{"restricted join signed by both", sign(event(spec.MRoomMember, bob, sk(bob), map[string]any{"membership": "join", "join_authorised_via_users_server": alice}), b, a), true},
		{"restricted join not signed by the authoriser", sign(event(spec.MRoomMember, bob, sk(bob), map[string]any{"membership": "join", "join_authorised_via_users_server": alice}), b), true},
	}
}

// TestCheckEventAgreesWithGomatrixserverlib holds what the roomserver
// makes of other servers' events (checkEvent, taking plain events its
// own way, then parseChecked) to what gomatrixserverlib alone makes of
// them: each is accepted or refused alike, with the same ID, JSON and
// redaction, in every supported room version.
func TestCheckEventAgreesWithGomatrixserverlib(t *testing.T) {
	keys := testnet.New()
	for _, version := range roomserver.SupportedVersions {
		verImpl := gomatrixserverlib.MustGetRoomVersion(version)
		cases := agreeCases(t, keys, verImpl)
		accepted := 0
		for _, c := range cases {
			if c.name == "no content hash (redacted)" {
				c.json = setKey(t, cases[0].json, "hashes", map[string]any{})
			}
			ok := checkAgrees(t, keys, version, c.json)
			if ok {
				accepted++
			}
			if _, plain, _ := roomserver.CheckEvent(context.Background(), version, c.json, keys.Verifier()); plain != c.plain {
				t.Errorf("v%s %s: checked plainly: %v, want %v", version, c.name, plain, c.plain)
			}
		}
		if accepted < 10 || accepted > len(cases)-10 {
			t.Errorf("v%s: %d of %d cases accepted: the cases do not test both ways", version, accepted, len(cases))
		}
	}
}

// checkAgrees checks an event both ways and fails t if they differ; it
// reports whether the event was accepted.
func checkAgrees(t *testing.T, keys *testnet.Net, version gomatrixserverlib.RoomVersion, js []byte) bool {
	t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(version)
	want, wantErr := gmslCheck(verImpl, bytes.Clone(js), keys.Verifier())
	got, _, err := roomserver.CheckEvent(context.Background(), version, bytes.Clone(js), keys.Verifier())
	switch {
	case (err == nil) != (wantErr == nil):
		t.Errorf("v%s %.300s:\nroomserver: %v\ngomatrixserverlib: %v", version, js, err, wantErr)
	case err != nil:
	case got.EventID() != want.EventID() || !bytes.Equal(got.JSON(), want.JSON()) || got.Redacted() != want.Redacted():
		t.Errorf("v%s %.300s:\nroomserver: %s %s redacted=%v\ngomatrixserverlib: %s %s redacted=%v", version, js,
			got.EventID(), got.JSON(), got.Redacted(), want.EventID(), want.JSON(), want.Redacted())
	}
	return err == nil && wantErr == nil
}

// gmslCheck is what gomatrixserverlib alone makes of an event from
// another server. It panics on some malformed events (see
// TestEventsThatWouldPanicAreRefused): that counts as refusing them.
func gmslCheck(verImpl gomatrixserverlib.IRoomVersion, js []byte, verifier gomatrixserverlib.JSONVerifier) (pdu gomatrixserverlib.PDU, err error) {
	defer func() {
		if r := recover(); r != nil {
			pdu, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	if pdu, err = verImpl.NewEventFromUntrustedJSON(js); err != nil {
		return nil, err
	}
	// As the roomserver maps senders to users: strictly (gomatrixserverlib
	// asks no server's signature for a sender that is not a user).
	strict := func(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) { return spec.NewUserID(string(s), true) }
	if err = gomatrixserverlib.VerifyEventSignatures(context.Background(), pdu, verifier, strict); err != nil {
		return nil, err
	}
	pdu.RoomID()
	return pdu, nil
}

// FuzzCheckEvent holds checkEvent to gomatrixserverlib on any bytes,
// starting from the cases' events.
func FuzzCheckEvent(f *testing.F) {
	keys := testnet.New()
	verImpl := gomatrixserverlib.MustGetRoomVersion(roomserver.StableVersions[0])
	for _, c := range agreeCases(f, keys, verImpl) {
		f.Add(byte(0), c.json)
	}
	f.Fuzz(func(t *testing.T, version byte, js []byte) {
		checkAgrees(t, keys, roomserver.SupportedVersions[int(version)%len(roomserver.SupportedVersions)], js)
	})
}

// TestEventsThatWouldPanicAreRefused: gomatrixserverlib parses an event
// whose room ID is malformed ("!:") and panics when asked for its room (as
// VerifyEventSignatures asks), and one whose content is not an object
// (its content hash matching) and panics when asked for its ID. Such an
// event from another server, in a room whose version the caller gives
// (backfill, a join's state), is refused, and crashes nothing; so it is
// when only parsed (ParseUntrusted).
func TestEventsThatWouldPanicAreRefused(t *testing.T) {
	keys := testnet.New()
	s := newServer(t, "c.test", keys)
	a := newEventSigner(keys, "a.test")
	alice := "@alice:a.test"
	fields := func(room, typ string, content any) map[string]any {
		return map[string]any{
			"room_id": room, "type": typ, "sender": alice, "state_key": alice, "content": content,
			"depth": 3, "origin_server_ts": 1700000000000, "prev_events": []string{"$p"}, "auth_events": []string{"$a"},
		}
	}
	var in []roomserver.InputEvent
	for _, version := range roomserver.SupportedVersions {
		verImpl := gomatrixserverlib.MustGetRoomVersion(version)
		add := func(js []byte) {
			in = append(in, roomserver.InputEvent{Origin: "a.test", RoomVersion: version, JSON: js})
			if _, err := roomserver.ParseUntrusted(verImpl, js); err == nil {
				t.Errorf("v%s: parsed %.200s", version, js)
			}
		}
		for _, typ := range []string{"m.room.message", spec.MRoomMember} {
			for _, room := range []string{"!:", "!x", "!:a.test", "!x:", "!ab"} {
				add(signEvent(t, verImpl, fields(room, typ, map[string]any{"membership": "join"}), a))
			}
			for _, content := range []any{[]any{1, 2}, "join", 5} {
				// Hashed but not signed: nothing can sign what does not redact.
				f := fields("!room:a.test", typ, content)
				canonical, err := gomatrixserverlib.CanonicalJSON(mustJSON(t, f))
				if err != nil {
					t.Fatal(err)
				}
				sum := sha256.Sum256(canonical)
				f["hashes"] = map[string]string{"sha256": base64.RawStdEncoding.EncodeToString(sum[:])}
				f["signatures"] = map[string]any{"a.test": map[string]string{string(testnet.KeyID): base64.RawStdEncoding.EncodeToString(make([]byte, 64))}}
				add(mustJSON(t, f))
			}
		}
	}
	for i, v := range s.rs.Verify(context.Background(), in) {
		if v.Err == nil {
			t.Errorf("%.200s was accepted", in[i].JSON)
		}
	}
}
