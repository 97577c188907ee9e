package storage

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// StreamEvents reads what StreamEach reads of each event, row for row,
// in both directions and over any range, with the server name restored
// in the JSON even though the buffer it is restored into is reused.
func TestStreamEventsMatchesStreamEach(t *testing.T) {
	const name = "srv.example"
	db, ss := openSyncStore(t, Options{Compact: name})
	var err error
	ctx := context.Background()
	var rooms [2]int64
	err = db.Write(ctx, func(tx *Tx) error {
		for i := range rooms {
			if rooms[i], err = InsertRoom(tx, fmt.Sprintf("!r%d:%s", i, name), "11"); err != nil {
				return err
			}
		}
		for i := 0; i < 40; i++ {
			room := rooms[i%2]
			// Lengths vary, so a shorter event follows a longer one in
			// the reused buffer.
			js := fmt.Sprintf(`{"sender":"@u%d:%s","content":{"body":"%s"},"origin":"%s"}`, i, name, bytes.Repeat([]byte("x"), (i*37)%300), name)
			if i%7 == 0 {
				js = `{"content":{},"sender":"@plain:other.example"}`
			}
			nid, err := InsertEvent(tx, &Event{RoomNID: room, ID: fmt.Sprintf("$e%d", i), TypeNID: 15, Depth: int64(i), SnapshotNID: int64(i + 1), Redacted: i%5 == 0, JSON: []byte(js)})
			if err != nil {
				return err
			}
			var adds []int64
			if i%3 == 0 {
				adds = []int64{nid}
			}
			pos, err := AppendStream(tx, room, nid, adds, nil)
			if err != nil {
				return err
			}
			if err := SetStreamPos(tx, nid, pos); err != nil {
				return err
			}
			if i == 20 { // a row with no event (a state reset) is skipped by both
				if _, err := AppendStream(tx, room, 0, nil, []int64{nid}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := ss.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	type row struct {
		pos int64
		ev  SyncEvent
	}
	for _, room := range rooms {
		for _, r := range [][2]int64{{0, 1 << 40}, {5, 30}, {-10, 3}, {30, 30}} {
			for _, desc := range []bool{true, false} {
				var want, got []row
				err := snap.StreamEach(room, r[0], r[1], desc, func(sr *StreamRow) bool {
					e := sr.Event
					e.JSON = bytes.Clone(e.JSON)
					e.TypeNID, e.KeyNID = 0, 0 // StreamEvents does not read them
					want = append(want, row{sr.Pos, e})
					return true
				})
				if err != nil {
					t.Fatal(err)
				}
				err = snap.StreamEvents(room, r[0], r[1], desc, func(pos int64, se *SyncEvent) bool {
					e := *se
					e.JSON = bytes.Clone(e.JSON)
					got = append(got, row{pos, e})
					return true
				})
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want) {
					t.Fatalf("room %d %v desc=%v: %d rows, want %d", room, r, desc, len(got), len(want))
				}
				for i := range got {
					g, w := got[i], want[i]
					if g.pos != w.pos || g.ev.NID != w.ev.NID || g.ev.ID != w.ev.ID || g.ev.SnapshotNID != w.ev.SnapshotNID ||
						g.ev.StreamPos != w.ev.StreamPos || g.ev.Redacted != w.ev.Redacted || !bytes.Equal(g.ev.JSON, w.ev.JSON) {
						t.Errorf("room %d %v desc=%v row %d:\n got %+v %s\nwant %+v %s", room, r, desc, i, g, g.ev.JSON, w, w.ev.JSON)
					}
					if bytes.IndexByte(g.ev.JSON, compactByte) >= 0 {
						t.Errorf("row %d: JSON still packed: %q", i, g.ev.JSON)
					}
				}
			}
		}
	}
	// Stopping early stops the walk.
	n := 0
	if err := snap.StreamEvents(rooms[0], 0, 1<<40, true, func(int64, *SyncEvent) bool { n++; return n < 3 }); err != nil || n != 3 {
		t.Errorf("early stop: %d rows, %v", n, err)
	}
}

func TestUnpackIntoMatchesUnpack(t *testing.T) {
	db := &DB{compact: []byte("srv.example")}
	var buf []byte
	for _, s := range []string{"", "\x01", "a\x01b\x01\x01c", "no marker", "\x01" + string(bytes.Repeat([]byte("y"), 500)) + "\x01", "x"} {
		var out []byte
		buf, out = db.unpackInto(buf, []byte(s))
		if want := db.Unpack([]byte(s)); !bytes.Equal(out, want) {
			t.Errorf("%q: got %q, want %q", s, out, want)
		}
	}
	plain := &DB{}
	if _, out := plain.unpackInto(nil, []byte("a\x01")); string(out) != "a\x01" {
		t.Errorf("without a compact string the JSON must pass through: %q", out)
	}
}

// openSyncStore opens a database (at opts.Path, or in a temporary
// directory) with the rooms' and user data's tables, and its sync store;
// both close when the test ends.
func openSyncStore(t *testing.T, opts Options) (*DB, *SyncStore) {
	t.Helper()
	if opts.Path == "" {
		opts.Path = filepath.Join(t.TempDir(), "h.db")
	}
	db, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, m := range []func() error{db.MigrateRooms, db.MigrateUserData} {
		if err := m(); err != nil {
			t.Fatal(err)
		}
	}
	ss, err := db.SyncStore()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	return db, ss
}
