package backfill

import (
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

// TestParseSkipsMalformedRoomIDs: a peer's answer may hold events whose
// room ID is no room ID ("!:"). gomatrixserverlib parses them and panics
// when asked for their room; parse skips them, and keeps the room's own.
func TestParseSkipsMalformedRoomIDs(t *testing.T) {
	room := "!room:a.test"
	var pdus []json.RawMessage
	for _, id := range []string{"!:", room, "!x", "!:a.test", room} {
		js, err := json.Marshal(map[string]any{
			"room_id": id, "type": "m.room.message", "sender": "@alice:a.test", "content": map[string]any{"body": "x"},
			"depth": 3, "origin_server_ts": 1700000000000, "prev_events": []string{"$p"}, "auth_events": []string{"$a"},
		})
		if err != nil {
			t.Fatal(err)
		}
		pdus = append(pdus, js)
	}
	got := parse(pdus, gomatrixserverlib.RoomVersionV11, room)
	if len(got) != 2 {
		t.Fatalf("parsed %d events of the room, want 2", len(got))
	}
	for _, ev := range got {
		if ev.RoomID().String() != room {
			t.Errorf("parsed an event of %s", ev.RoomID())
		}
	}
}
