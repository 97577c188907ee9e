package syncapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
	"hearth/node/storage"
)

// The arena /messages formats pages with must give exactly what
// parseEvent gives (sync's format, checked against clientevent.Format in
// format_test.go): same JSON bytes, same fields, same transaction ID
// splice. Events are read back through StreamEvents from a database
// that compacts the server name, for every room version and kind of
// event, several senders in a row.
func TestPageArenaMatchesParseEvent(t *testing.T) {
	const name = "hearth.test"
	db, err := storage.Open(storage.Options{Path: filepath.Join(t.TempDir(), "h.db"), Compact: name})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.MigrateRooms(); err != nil {
		t.Fatal(err)
	}
	if err := db.MigrateUserData(); err != nil {
		t.Fatal(err)
	}
	ss, err := db.SyncStore()
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	_, key, _ := ed25519.GenerateKey(nil)
	rs, err := roomserver.New(db, roomserver.Config{ServerName: name, KeyID: "ed25519:p2p", PrivateKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	ctx := context.Background()
	alice, bob := "@alice:"+name, "@bob:"+name
	sk := func(s string) *string { return &s }
	big, _ := json.Marshal(map[string]string{"body": strings.Repeat("long ", 8000)}) // past a JSON buffer
	// One arena for every room: events cross slabs and buffers, and are
	// compared only once all are parsed, so none may overwrite another.
	arena := newPageArena()
	var got, want []*event
	var ses []storage.SyncEvent
	var roomOf []string
	for _, v := range roomserver.SupportedVersions {
		room, err := createAdminRoom(ctx, rs, v, alice,
			roomserver.NewEvent{Sender: alice, Type: spec.MRoomJoinRules, StateKey: sk(""), Content: json.RawMessage(`{"join_rule":"public"}`)},
			roomserver.NewEvent{Sender: alice, Type: spec.MRoomHistoryVisibility, StateKey: sk(""), Content: json.RawMessage(`{"history_visibility":"joined"}`)})
		if err != nil {
			t.Fatalf("v%s: %v", v, err)
		}
		ids, err := rs.Send(ctx, room,
			roomserver.NewEvent{Sender: bob, Type: spec.MRoomMember, StateKey: sk(bob), Content: json.RawMessage(`{"membership":"join"}`)},
			roomserver.NewEvent{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"tab\there \u2603 <b>","msgtype":"m.text","url":"mxc://x/y"}`)},
			roomserver.NewEvent{Sender: bob, Type: "m.room.message", Content: json.RawMessage(`{"body":"plain","msgtype":"m.text"}`)},
			roomserver.NewEvent{Sender: bob, Type: "m.room.message", Content: json.RawMessage(`{"body":"again","url":5}`)},
			roomserver.NewEvent{Sender: alice, Type: "org.example.state", StateKey: sk("key \"quoted\" \u00e9"), Content: json.RawMessage(`{"nested":{"unsigned":{"x":[1,2,{"y":"}"}]}}}`)},
			roomserver.NewEvent{Sender: alice, Type: "org.example.t\u00ffpe", Content: json.RawMessage(`{}`)},
			roomserver.NewEvent{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"to redact"}`)},
			roomserver.NewEvent{Sender: bob, Type: spec.MRoomMember, StateKey: sk(bob), Content: json.RawMessage(`{"membership":"leave"}`)},
			roomserver.NewEvent{Sender: alice, Type: "m.room.message", Content: big},
		)
		if err != nil {
			t.Fatalf("v%s send: %v", v, err)
		}
		var chat []roomserver.NewEvent // enough for events to cross slabs
		for i := range 30 {
			chat = append(chat, roomserver.NewEvent{Sender: alice, Type: "m.room.message",
				Content: json.RawMessage(fmt.Sprintf(`{"body":"message %d","msgtype":"m.text"}`, i))})
		}
		if _, err := rs.Send(ctx, room, chat...); err != nil {
			t.Fatalf("v%s chat: %v", v, err)
		}
		if _, err := rs.Send(ctx, room, redaction(v, alice, ids[6])); err != nil {
			t.Fatalf("v%s redact: %v", v, err)
		}
		row, err := db.RoomByID(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		snap, err := ss.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := len(got)
		err = snap.StreamEvents(row.NID, 0, 1<<62, true, func(pos int64, se *storage.SyncEvent) bool {
			if se.StreamPos != pos {
				t.Errorf("v%s %s: stream_pos %d at row %d", v, se.ID, se.StreamPos, pos)
			}
			w, err := parseEvent(room, se)
			if err != nil {
				t.Fatalf("v%s %s: %v", v, se.ID, err)
			}
			g, err := arena.parse(room, se)
			if err != nil {
				t.Fatalf("v%s %s: arena: %v", v, se.ID, err)
			}
			got, want = append(got, g), append(want, w)
			c := *se
			c.JSON = bytes.Clone(se.JSON)
			ses, roomOf = append(ses, c), append(roomOf, room)
			return true
		})
		snap.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(got)-n < 14 {
			t.Fatalf("v%s: %d events walked", v, len(got)-n)
		}
	}
	compare := func(pass string) {
		for i := range got {
			g, w := got[i], want[i]
			if string(g.JSON) != string(w.JSON) {
				t.Errorf("%s %s:\n got %s\nwant %s", pass, w.ID, g.JSON, w.JSON)
			}
			gc, wc := *g, *w
			gc.JSON, wc.JSON = nil, nil
			if !reflect.DeepEqual(gc, wc) {
				t.Errorf("%s %s: fields\n got %+v\nwant %+v", pass, w.ID, gc, wc)
			}
			if a, b := g.withTxnID("t\"1"), w.withTxnID("t\"1"); string(a) != string(b) {
				t.Errorf("%s %s: with transaction ID\n got %s\nwant %s", pass, w.ID, a, b)
			}
			var m map[string]any
			if err := json.Unmarshal(g.JSON, &m); err != nil {
				t.Errorf("%s %s: invalid JSON %s", pass, w.ID, g.JSON)
			}
		}
	}
	compare("first")
	// Released buffers and slabs, reused by the next page, give the same.
	arena.release()
	for i := range ses {
		g, err := arena.parse(roomOf[i], &ses[i])
		if err != nil {
			t.Fatal(err)
		}
		got[i] = g
	}
	compare("reused")
	arena.release()
	total := len(got)
	t.Logf("%d events compared", total)
}

// FuzzPageArena: on any stored JSON the arena and parseEvent agree
// (both refuse it, or both give the same event), and neither panics.
func FuzzPageArena(f *testing.F) {
	for _, s := range []string{
		`{"type":"m.room.message","sender":"@a:x","content":{"body":"hi"},"origin_server_ts":5}`,
		`{"type":"m.room.member","sender":"@a:x","state_key":"@a:x","content":{"membership":"join"},"unsigned":{"age":1}}`,
		`{"type":"m.room.redaction","sender":"@a:x","content":{"redacts":"$e"},"redacts":"$f"}`,
		`{"type":"m.room.history_visibility","state_key":"","sender":"@\u00e9:x","content":{"history_visibility":"shared"}}`,
		`{"type":"x","sender":"\"","content":{"url":"mxc://a"}}`,
		`{"type":"x","sender":1,"content":{}}`, `{"type":"x","sender":"\q","content":{}}`,
		`{"type":"","content":{}}`, `{"content":[]}`, `[]`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		se := &storage.SyncEvent{NID: 7, ID: "$ev", StreamPos: 3, SnapshotNID: 2, JSON: b}
		w, werr := parseEvent("!r:x", se)
		arena := newPageArena()
		// A sender remembered from an earlier event must not change the
		// answer.
		arena.parse("!r:x", &storage.SyncEvent{JSON: []byte(`{"type":"t","sender":"\"","content":{}}`)})
		arena.parse("!r:x", &storage.SyncEvent{JSON: []byte(`{"type":"t","sender":"\q","content":{}}`)})
		g, gerr := arena.parse("!r:x", se)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%q: parseEvent %v, arena %v", b, werr, gerr)
		}
		if werr != nil {
			return
		}
		// Without a sender memory (as parseEvent could use it) too.
		plain := &event{NID: se.NID, ID: se.ID, StreamPos: se.StreamPos, SnapshotNID: se.SnapshotNID}
		pb, err := appendClientEvent(nil, plain, "!r:x", se, nil)
		if err != nil {
			t.Fatalf("%q: without sender memory: %v", b, err)
		}
		plain.JSON = pb
		gc, wc := *g, *w
		if string(gc.JSON) != string(wc.JSON) || string(pb) != string(wc.JSON) {
			t.Fatalf("%q:\n got %s\n and %s\nwant %s", b, gc.JSON, pb, wc.JSON)
		}
		if !reflect.DeepEqual(*plain, *w) {
			t.Fatalf("%q: without sender memory: fields\n got %+v\nwant %+v", b, *plain, *w)
		}
		gc.JSON, wc.JSON = nil, nil
		if !reflect.DeepEqual(gc, wc) {
			t.Fatalf("%q: fields\n got %+v\nwant %+v", b, gc, wc)
		}
	})
}
