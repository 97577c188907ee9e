package roomserver_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/internal/testnet"
	"hearth/node/roomserver"
)

// redactCases are events (canonicalised before use, if JSON), and
// whether RedactCanonical must redact them itself (by shape) in room
// version 11.
func redactCases() []struct {
	name    string
	json    string
	byShape bool
} {
	msg := func(extra string) string {
		return `{"auth_events":["$a"],"content":{"body":"hi","msgtype":"m.text"},"depth":3,` + extra +
			`"hashes":{"sha256":"x"},"origin_server_ts":5,"prev_events":["$p"],"room_id":"!r:a","sender":"@a:a",` +
			`"signatures":{"a":{"ed25519:1":"s"}},"type":"m.room.message","unsigned":{"age":1}}`
	}
	state := func(typ, content string) string {
		return `{"auth_events":[],"content":` + content + `,"depth":1,"prev_events":[],"room_id":"!r:a","sender":"@a:a","state_key":"","type":"` + typ + `"}`
	}
	many := `{"content":{},"type":"m.room.message"`
	for i := range 40 {
		many += fmt.Sprintf(`,"x%02d":%d`, i, i)
	}
	many += "}"
	return []struct {
		name    string
		json    string
		byShape bool
	}{
		{"message", msg(""), true},
		{"message with keys of older versions", msg(`"membership":"join","origin":"a","prev_state":[],`), true},
		{"message with keys of no version", msg(`"event_id":"$e","redacts":"$r","x.custom":{"k":[1,2]},`), true},
		{"message with a sender in capitals", msg(`"SENDER":"@b:b",`), true},
		{"message with a type in capitals", msg(`"TYPE":"m.room.member",`), false},
		{"message with a long s", msg(`"ſender":"@b:b",`), false},
		{"message with a Kelvin sign", msg(`"state_\u212aey":"x",`), false},
		{"message content with membership", `{"content":{"membership":"join"},"type":"m.room.message"}`, true},
		{"message with empty content", `{"content":{},"type":"m.room.message"}`, true},
		{"message type with HTML", `{"content":{"a":1},"type":"<b>&"}`, false},
		{"type not a string", `{"content":{},"type":5}`, false},
		{"no type", `{"content":{"a":1},"sender":"@a:a"}`, false},
		{"no content", `{"sender":"@a:a","type":"m.room.message"}`, false},
		{"content not an object", `{"content":[1],"type":"m.room.message"}`, false},
		{"content null", `{"content":null,"type":"m.room.message"}`, false},
		{"key given twice", `{"content":{},"sender":"@a:a","sender":"@b:b","type":"m.room.message"}`, false},
		{"many keys", many, false},
		{"not an object", `["content"]`, false},
		{"null", `null`, false},
		{"not JSON", `{"content":`, false},
		{"member", state("m.room.member", `{"avatar_url":"x","displayname":"A","membership":"join"}`), false},
		{"member without membership", state("m.room.member", `{"displayname":"A"}`), true},
		{"restricted join", state("m.room.member", `{"join_authorised_via_users_server":"@b:b","membership":"join"}`), false},
		{"create", state("m.room.create", `{"creator":"@a:a","room_version":"11"}`), false},
		{"power levels", state("m.room.power_levels", `{"ban":50,"invite":0,"users":{"@a:a":100},"x":1}`), false},
		{"join rules", state("m.room.join_rules", `{"allow":[],"join_rule":"restricted"}`), false},
		{"history visibility", state("m.room.history_visibility", `{"history_visibility":"shared"}`), false},
		{"aliases", state("m.room.aliases", `{"aliases":["#a:a"]}`), true},
		{"name", state("m.room.name", `{"name":"Room"}`), true},
		{"redaction", `{"content":{"redacts":"$x"},"redacts":"$x","type":"m.room.redaction"}`, false},
	}
}

// TestRedactAgreesWithGomatrixserverlib holds RedactCanonical to
// gomatrixserverlib's RedactEventJSON: the same canonical bytes, or the
// same failure, in every room version, before and after the shapes are
// learned; and in version 11 the events it must redact by shape (messages
// above all) are redacted so, the others by gomatrixserverlib.
func TestRedactAgreesWithGomatrixserverlib(t *testing.T) {
	for _, version := range gomatrixserverlib.RoomVersions() {
		verImpl := gomatrixserverlib.MustGetRoomVersion(version.Version())
		for range 2 {
			for _, c := range redactCases() {
				byShape := redactAgrees(t, verImpl, []byte(c.json))
				if verImpl.Version() == gomatrixserverlib.RoomVersionV11 && byShape != c.byShape {
					t.Errorf("v11 %s: redacted by shape: %v, want %v", c.name, byShape, c.byShape)
				}
			}
		}
	}
}

// redactAgrees redacts js both ways, fails t if they differ, and tells
// whether RedactCanonical took it by shape.
func redactAgrees(t testing.TB, verImpl gomatrixserverlib.IRoomVersion, js []byte) bool {
	t.Helper()
	if c, err := gomatrixserverlib.CanonicalJSON(js); err == nil {
		js = c
	}
	want, wantErr := gmslRedact(verImpl, bytes.Clone(js))
	if wantErr == nil {
		want, wantErr = gomatrixserverlib.CanonicalJSON(want)
	}
	got, canonical, err := roomserver.RedactCanonical(verImpl, bytes.Clone(js))
	if err == nil && !canonical {
		got, err = gomatrixserverlib.CanonicalJSON(got)
	}
	switch {
	case (err == nil) != (wantErr == nil):
		t.Errorf("v%s %s:\nRedactCanonical: %s %v\ngomatrixserverlib: %s %v", verImpl.Version(), js, got, err, want, wantErr)
	case err == nil && !bytes.Equal(got, want):
		t.Errorf("v%s %s:\nRedactCanonical: %s\ngomatrixserverlib: %s", verImpl.Version(), js, got, want)
	}
	return canonical
}

// gmslRedact is gomatrixserverlib's redaction, which panics on some
// input (null): that counts as refusing it.
func gmslRedact(verImpl gomatrixserverlib.IRoomVersion, js []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	return verImpl.RedactEventJSON(js)
}

// FuzzRedact redacts the canonical form of any JSON object both ways in
// every room version.
func FuzzRedact(f *testing.F) {
	for _, c := range redactCases() {
		f.Add([]byte(c.json))
	}
	keys := testnet.New()
	for _, c := range agreeCases(f, keys, gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)) {
		f.Add(c.json)
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		canonical, err := gomatrixserverlib.CanonicalJSON(js)
		if err != nil {
			return
		}
		for _, version := range gomatrixserverlib.RoomVersions() {
			redactAgrees(t, gomatrixserverlib.MustGetRoomVersion(version.Version()), canonical)
		}
	})
}
