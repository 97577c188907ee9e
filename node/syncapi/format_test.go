package syncapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/clientevent"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

// parseEvent's fast path must give what clientevent.Format gives (what
// /event serves), for every room version and kind of event.
func TestParseEventMatchesClientEventFormat(t *testing.T) {
	db, err := storage.Open(storage.Options{Path: filepath.Join(t.TempDir(), "h.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, key, _ := ed25519.GenerateKey(nil)
	rs, err := roomserver.New(db, roomserver.Config{ServerName: "hearth.test", KeyID: "ed25519:p2p", PrivateKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	ctx := context.Background()
	alice := "@alice:hearth.test"
	sk := func(s string) *string { return &s }
	for _, v := range roomserver.SupportedVersions {
		room, err := createAdminRoom(ctx, rs, v, alice)
		if err != nil {
			t.Fatalf("v%s: %v", v, err)
		}
		ids, err := rs.Send(ctx, room,
			roomserver.NewEvent{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"tab\there \u2603 <b>","msgtype":"m.text","url":"mxc://x/y"}`)},
			roomserver.NewEvent{Sender: alice, Type: "org.example.state", StateKey: sk("key \"quoted\" \u00e9"), Content: json.RawMessage(`{"nested":{"unsigned":{"x":[1,2,{"y":"}"}]}}}`)},
			roomserver.NewEvent{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"to redact"}`)},
		)
		if err != nil {
			t.Fatalf("v%s send: %v", v, err)
		}
		if _, err := rs.Send(ctx, room, redaction(v, alice, ids[2])); err != nil {
			t.Fatalf("v%s redact: %v", v, err)
		}
		pdus, err := rs.CurrentState(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		all := map[string]bool{}
		for _, p := range pdus {
			all[p.EventID()] = true
		}
		for _, id := range ids {
			all[id] = true
		}
		rooms, _ := db.RoomByID(ctx, room)
		for id := range all {
			row, err := db.EventByID(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			se := &storage.SyncEvent{NID: row.NID, ID: row.ID, Redacted: row.Redacted, JSON: row.JSON}
			ev, err := parseEvent(room, se)
			if err != nil {
				t.Fatalf("v%s %s: %v", v, id, err)
			}
			pdu, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(rooms.Version)).
				NewEventFromTrustedJSONWithEventID(row.ID, row.JSON, row.Redacted)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := json.Marshal(clientevent.Format(pdu, room))
			var got, exp map[string]any
			if err := json.Unmarshal(ev.JSON, &got); err != nil {
				t.Fatalf("v%s %s: invalid JSON %s", v, id, ev.JSON)
			}
			json.Unmarshal(want, &exp)
			if u, ok := got["unsigned"].(map[string]any); ok && len(u) == 0 {
				delete(got, "unsigned")
			}
			if !reflect.DeepEqual(got, exp) {
				t.Errorf("v%s %s:\n got %s\nwant %s", v, id, ev.JSON, want)
			}
			if ev.Type != pdu.Type() || ev.Sender != string(pdu.SenderID()) || !reflect.DeepEqual(ev.StateKey, pdu.StateKey()) {
				t.Errorf("v%s %s: fields differ", v, id)
			}
		}
	}
}

// FuzzEachField: the scanner never panics, and on valid JSON objects
// agrees with encoding/json about the keys.
func FuzzEachField(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":"x\"}","b":{"c":[1,{"d":"]"}]},"e":null}`, `{"a"`, `{"a":}`, `[1]`, `{"a":"\`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var keys []string
		err := eachField(b, func(k, v []byte) bool {
			s, _ := jsonString(k)
			keys = append(keys, s)
			return true
		})
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) == nil && m != nil {
			if err != nil {
				t.Fatalf("valid object %q rejected: %v", b, err)
			}
			for _, k := range keys {
				if _, ok := m[k]; !ok {
					t.Fatalf("key %q not in %q", k, b)
				}
			}
		}
	})
}

// redaction redacts target in room version v: in content from version
// 11 on, at the top level before.
func redaction(v gomatrixserverlib.RoomVersion, sender, target string) roomserver.NewEvent {
	if v == gomatrixserverlib.RoomVersionV10 {
		return roomserver.NewEvent{Sender: sender, Type: "m.room.redaction", Redacts: target, Content: json.RawMessage(`{}`)}
	}
	return roomserver.NewEvent{Sender: sender, Type: "m.room.redaction", Content: json.RawMessage(`{"redacts":"` + target + `"}`)}
}

// createAdminRoom creates a room of version v with alice joined (with a
// display name that needs escaping) and in charge: power level 100, or,
// from version 12, as its creator, which the power levels must not list.
func createAdminRoom(ctx context.Context, rs *roomserver.Roomserver, v gomatrixserverlib.RoomVersion, alice string, more ...roomserver.NewEvent) (string, error) {
	pl := map[string]any{"users": map[string]int{alice: 100}}
	if v == gomatrixserverlib.RoomVersionV12 {
		pl = map[string]any{}
	}
	plJSON, _ := json.Marshal(pl)
	alices := alice
	return rs.CreateRoom(ctx, v, alice, nil, append([]roomserver.NewEvent{
		{Sender: alice, Type: spec.MRoomMember, StateKey: &alices, Content: json.RawMessage(`{"membership":"join","displayname":"Al\u00efce \"A\""}`)},
		{Sender: alice, Type: spec.MRoomPowerLevels, StateKey: new(string), Content: plJSON},
	}, more...))
}
