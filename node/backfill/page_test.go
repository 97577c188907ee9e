package backfill

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

// TestParseSkipsWhatWouldPanic: a peer's answer may hold events that
// gomatrixserverlib parses and then panics on: a room ID that is no room
// ID ("!:") when asked for the room, content that is not an object (with
// a content hash that matches, so parsing keeps it) when asked for the
// event's ID. parse skips them, and keeps the room's own events.
func TestParseSkipsWhatWouldPanic(t *testing.T) {
	room := "!room:a.test"
	event := func(roomID string, content any) json.RawMessage {
		f := map[string]any{
			"room_id": roomID, "type": "m.room.message", "sender": "@alice:a.test", "content": content,
			"depth": 3, "origin_server_ts": 1700000000000, "prev_events": []string{"$p"}, "auth_events": []string{"$a"},
		}
		js, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if js, err = gomatrixserverlib.CanonicalJSON(js); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(js)
		f["hashes"] = map[string]string{"sha256": base64.RawStdEncoding.EncodeToString(sum[:])}
		js, err = json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	body := map[string]any{"body": "x"}
	pdus := []json.RawMessage{
		event("!:", body), event(room, body), event("!x", body), event("!:a.test", body),
		event(room, []any{1, 2}), event(room, "text"), event(room, map[string]any{"body": "y"}),
	}
	got := parse(pdus, gomatrixserverlib.RoomVersionV11, room)
	if len(got) != 2 {
		t.Fatalf("parsed %d events of the room, want 2", len(got))
	}
	for _, ev := range got {
		if ev.RoomID().String() != room || ev.Redacted() {
			t.Errorf("parsed %s of %s (redacted %v)", ev.EventID(), ev.RoomID(), ev.Redacted())
		}
	}
}
