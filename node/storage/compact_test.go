package storage

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

func TestCompactEventJSONRoundTrips(t *testing.T) {
	const name = "k51qzi5uqu5dlkd16ldvg4714xcnsnw3qayrd9y1k4slt6eo6jnwqvc4qcpqt1"
	db, err := Open(Options{Path: filepath.Join(t.TempDir(), "h.db"), Compact: name})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.MigrateRooms(); err != nil {
		t.Fatal(err)
	}
	js := []byte(`{"origin":"` + name + `","sender":"@a:` + name + `","content":{"body":"\u0001 escaped stays escaped"}}`)
	ctx := context.Background()
	err = db.Write(ctx, func(tx *Tx) error {
		room, err := InsertRoom(tx, "!r:"+name, "11")
		if err != nil {
			return err
		}
		_, err = InsertEvent(tx, &Event{RoomNID: room, ID: "$e", TypeNID: 15, Depth: 1, SnapshotNID: 1, JSON: js})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.EventByID(ctx, "$e")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.JSON, js) {
		t.Fatalf("JSON changed in storage:\n got %s\nwant %s", got.JSON, js)
	}
	var stored int
	db.R().QueryRow(`SELECT length(json) FROM events WHERE event_id = '$e'`).Scan(&stored)
	if stored != len(js)-2*(len(name)-1) {
		t.Fatalf("stored %d bytes for %d of JSON: the server name was not compacted", stored, len(js))
	}
}
