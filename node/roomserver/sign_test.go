package roomserver_test

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
)

// signCase is an event to build: SignEvent must give what
// gomatrixserverlib's EventBuilder.Build gives, byte for byte, or refuse
// what it refuses.
type signCase struct {
	typ      string
	stateKey *string
	content  string
	redacts  string
	noRoom   bool // a create event of a version whose room IDs are its hash
}

func signCases() map[string]signCase {
	empty, alice := "", "@alice:a.test"
	odd := "k\"\\\u00e9\u2028\x01"
	return map[string]signCase{
		"message":          {typ: "m.room.message", content: `{"msgtype":"m.text","body":"hello"}`},
		"unsorted, nested": {typ: "m.room.message", content: ` { "z":1, "a":{"y":[3,2,{"b":null,"a":true}],"x":"" }, "m":false } `},
		"escapes":          {typ: "m.room.message", content: `{"body":"<b>&amp;</b> \u00e9 \u2028 \ud83d\ude00 \"q\" \\ \/ \t","msgtype":"m.text"}`},
		"raw unicode":      {typ: "m.room.message", content: "{\"body\":\"é 😀 \u2029\"}"},
		"largest int":      {typ: "m.room.message", content: `{"n":9007199254740991,"m":-9007199254740991,"z":0}`},
		"int too large":    {typ: "m.room.message", content: `{"n":9007199254740992}`},
		"float":            {typ: "m.room.message", content: `{"n":1.5}`},
		"exponent":         {typ: "m.room.message", content: `{"n":1e3}`},
		"minus zero":       {typ: "m.room.message", content: `{"n":-0}`},
		"empty content":    {typ: "m.custom", content: `{}`},
		"name":             {typ: "m.room.name", stateKey: &empty, content: `{"name":"a room"}`},
		"member":           {typ: "m.room.member", stateKey: &alice, content: `{"membership":"join","displayname":"Alice","avatar_url":"mxc://a/b"}`},
		"power levels":     {typ: "m.room.power_levels", stateKey: &empty, content: `{"users":{"@alice:a.test":100},"events":{"m.room.name":50},"ban":50,"invite":0,"notifications":{"room":50}}`},
		"join rules":       {typ: "m.room.join_rules", stateKey: &empty, content: `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!x:a.test"}]}`},
		"odd state key":    {typ: "m.custom.state", stateKey: &odd, content: `{"k":"v"}`},
		"odd type":         {typ: "m.\"odd\"\\type<>", content: `{}`},
		"redaction":        {typ: "m.room.redaction", redacts: "$abc", content: `{"reason":"spam","redacts":"$abc"}`},
		"history vis":      {typ: "m.room.history_visibility", stateKey: &empty, content: `{"history_visibility":"shared","extra":1}`},
		"create, no room":  {typ: "m.room.create", stateKey: &empty, content: `{"room_version":"12"}`, noRoom: true},
		"create":           {typ: "m.room.create", stateKey: &empty, content: `{"room_version":"10","creator":"@alice:a.test"}`},
		"too large":        {typ: "m.room.message", content: `{"body":"` + strings.Repeat("x", 70_000) + `"}`},
		"long type":        {typ: strings.Repeat("t", 300), content: `{}`},
	}
}

// agree builds proto's event with both and fails t where they differ.
func agree(t *testing.T, verImpl gomatrixserverlib.IRoomVersion, proto func() *gomatrixserverlib.EventBuilder) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	origin, keyID := spec.ServerName("a.test"), gomatrixserverlib.KeyID("ed25519:a")
	now := time.UnixMilli(1_700_000_000_123)
	want, wantErr := proto().Build(now, origin, keyID, key)
	got, err := roomserver.SignEvent(verImpl, proto(), now, origin, keyID, key)
	switch {
	case (err != nil) != (wantErr != nil):
		t.Fatalf("SignEvent: %v; Build: %v", err, wantErr)
	case err != nil:
	case !bytes.Equal(got.JSON(), want.JSON()):
		t.Fatalf("SignEvent gave\n%s\nBuild gave\n%s", got.JSON(), want.JSON())
	case got.EventID() != want.EventID():
		t.Fatalf("event ID %s, Build's %s", got.EventID(), want.EventID())
	}
}

func TestSignEventAgreesWithBuild(t *testing.T) {
	for _, version := range roomserver.SupportedVersions {
		verImpl := gomatrixserverlib.MustGetRoomVersion(version)
		for name, c := range signCases() {
			t.Run(string(version)+"/"+name, func(t *testing.T) {
				roomID := "!room:a.test"
				if c.noRoom {
					roomID = ""
				}
				agree(t, verImpl, func() *gomatrixserverlib.EventBuilder {
					return verImpl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
						SenderID: "@alice:a.test", RoomID: roomID, Type: c.typ, StateKey: c.stateKey,
						Content: spec.RawJSON(c.content), Redacts: c.redacts,
						PrevEvents: []string{"$prev1", "$prev2"}, AuthEvents: []string{"$create", "$power"}, Depth: 7,
					})
				})
			})
		}
	}
}

// FuzzSignEvent holds SignEvent to Build on any room version, content,
// type and state key.
func FuzzSignEvent(f *testing.F) {
	for _, c := range signCases() {
		sk := ""
		if c.stateKey != nil {
			sk = *c.stateKey
		}
		f.Add(byte(0), c.typ, sk, c.stateKey != nil, []byte(c.content))
	}
	f.Fuzz(func(t *testing.T, version byte, typ, stateKey string, state bool, content []byte) {
		verImpl := gomatrixserverlib.MustGetRoomVersion(roomserver.SupportedVersions[int(version)%len(roomserver.SupportedVersions)])
		var sk *string
		if state {
			sk = &stateKey
		}
		agree(t, verImpl, func() *gomatrixserverlib.EventBuilder {
			return verImpl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
				SenderID: "@alice:a.test", RoomID: "!room:a.test", Type: typ, StateKey: sk,
				Content: spec.RawJSON(content), PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}, Depth: 2,
			})
		})
	})
}
