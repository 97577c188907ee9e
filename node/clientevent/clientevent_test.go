package clientevent_test

import (
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/clientevent"
)

func build(t *testing.T, v gomatrixserverlib.RoomVersion, pe gomatrixserverlib.ProtoEvent) gomatrixserverlib.PDU {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	if pe.PrevEvents == nil {
		pe.PrevEvents = []string{}
	}
	if pe.AuthEvents == nil {
		pe.AuthEvents = []string{}
	}
	ev, err := gomatrixserverlib.MustGetRoomVersion(v).NewEventBuilderFromProtoEvent(&pe).
		Build(time.UnixMilli(1700000000000), "hearth.test", "ed25519:p2p", key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestFormat(t *testing.T) {
	empty := ""
	// A v12 create event has no room_id: it derives from the event ID.
	create := build(t, gomatrixserverlib.RoomVersionV12, gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:hearth.test", Type: "m.room.create", StateKey: &empty, Depth: 1,
		Content: spec.RawJSON(`{"room_version":"12"}`),
	})
	e := clientevent.Format(create, "")
	if e.RoomID != "!"+strings.TrimPrefix(create.EventID(), "$") || e.StateKey == nil || *e.StateKey != "" {
		t.Fatalf("create event: %+v", e)
	}
	b, _ := json.Marshal(e)
	for _, want := range []string{`"content":{"room_version":"12"}`, `"origin_server_ts":1700000000000`, `"sender":"@alice:hearth.test"`, `"state_key":""`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("%s missing from %s", want, b)
		}
	}
	for _, absent := range []string{"signatures", "hashes", "depth", "auth_events", "prev_events", "unsigned", "redacts"} {
		if strings.Contains(string(b), absent) {
			t.Fatalf("%s must not be in a client event: %s", absent, b)
		}
	}

	// A v11 redaction keeps "redacts" at the top level for clients, taken
	// from content where the version put it.
	red := build(t, gomatrixserverlib.RoomVersionV11, gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:hearth.test", RoomID: "!r:hearth.test", Type: "m.room.redaction", Depth: 3,
		Content: spec.RawJSON(`{"redacts":"$target"}`),
	})
	e = clientevent.Format(red, "!r:hearth.test")
	if e.Redacts != "$target" || e.StateKey != nil || e.RoomID != "!r:hearth.test" {
		t.Fatalf("redaction: %+v", e)
	}

	// A redacted event has {} as content and passes on the unsigned the
	// roomserver stored with it (redacted_because).
	msg := build(t, gomatrixserverlib.RoomVersionV10, gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:hearth.test", RoomID: "!r:hearth.test", Type: "m.room.message", Depth: 4,
		Content: spec.RawJSON(`{"body":"secret"}`),
	})
	ver := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	redactedJSON, err := ver.RedactEventJSON(msg.JSON())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	json.Unmarshal(redactedJSON, &m)
	m["unsigned"] = json.RawMessage(`{"redacted_because":{"type":"m.room.redaction"}}`)
	redactedJSON, _ = json.Marshal(m)
	redacted, err := ver.NewEventFromTrustedJSONWithEventID(msg.EventID(), redactedJSON, true)
	if err != nil {
		t.Fatal(err)
	}
	e = clientevent.Format(redacted, "!r:hearth.test")
	if string(e.Content) != "{}" || !strings.Contains(string(e.Unsigned), "redacted_because") || e.EventID != msg.EventID() {
		t.Fatalf("redacted: content %s unsigned %s", e.Content, e.Unsigned)
	}
	if got := clientevent.FormatAll([]gomatrixserverlib.PDU{create, red}, "!x"); len(got) != 2 || got[1].RoomID != "!x" {
		t.Fatalf("FormatAll: %+v", got)
	}
	if clientevent.TxnDevice("@a:b", "D") == clientevent.TxnDevice("@a:b", "E") {
		t.Fatal("TxnDevice must tell devices apart")
	}
}

func BenchmarkFormat(b *testing.B) {
	t := &testing.T{}
	msg := build(t, gomatrixserverlib.RoomVersionV12, gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:hearth.test", RoomID: "!r", Type: "m.room.message", Depth: 4,
		Content: spec.RawJSON(`{"msgtype":"m.text","body":"hello there"}`),
	})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		e := clientevent.Format(msg, "!r")
		if _, err := json.Marshal(e); err != nil {
			b.Fatal(err)
		}
	}
}
