package storage

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
)

// TestEventsByIDAndByDepth: the batch reads behind /backfill find events
// by ID (rejected ones too; unknown IDs skipped) and a room's events by
// depth, deepest first, within the bounds and the room, at least as many
// as asked for when there are.
func TestEventsByIDAndByDepth(t *testing.T) {
	db, err := Open(Options{Path: filepath.Join(t.TempDir(), "h.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.MigrateRooms(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var room, other int64
	err = db.Write(ctx, func(tx *Tx) error {
		if room, err = InsertRoom(tx, "!r:a", "11"); err != nil {
			return err
		}
		if other, err = InsertRoom(tx, "!o:a", "11"); err != nil {
			return err
		}
		for d := int64(1); d <= 100; d++ {
			for _, r := range []int64{room, other} {
				e := &Event{RoomNID: r, ID: fmt.Sprintf("$%d-%d", r, d), TypeNID: 15, Depth: d, Rejected: d == 50, JSON: []byte(`{}`)}
				if _, err := InsertEvent(tx, e); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	evs, err := db.EventsByID(ctx, []string{fmt.Sprintf("$%d-7", room), fmt.Sprintf("$%d-50", room), "$unknown"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.ID)
		if e.ID == fmt.Sprintf("$%d-50", room) && !e.Rejected {
			t.Fatal("a rejected event read as valid")
		}
	}
	slices.Sort(ids)
	if want := []string{fmt.Sprintf("$%d-50", room), fmt.Sprintf("$%d-7", room)}; !slices.Equal(ids, want) {
		t.Fatalf("by ID: %v, want %v", ids, want)
	}

	for _, limit := range []int{1, 10, 40, 70, 500} {
		evs, err := db.EventsByDepth(ctx, room, 20, 80, limit)
		if err != nil {
			t.Fatal(err)
		}
		if want := min(limit, 61); len(evs) < want || len(evs) > max(2*limit, 32) {
			t.Fatalf("limit %d: %d events", limit, len(evs))
		}
		for i, e := range evs {
			if e.RoomNID != room || e.Depth < 20 || e.Depth > 80 {
				t.Fatalf("limit %d: event %s of room %d at depth %d", limit, e.ID, e.RoomNID, e.Depth)
			}
			if want := int64(80 - i); e.Depth != want {
				t.Fatalf("limit %d: event %d at depth %d, want %d (deepest first)", limit, i, e.Depth, want)
			}
		}
	}
}

// TestInsertHistory: backfilled history goes into the stream at the
// positions given, every row of a batch larger than one statement writes,
// and a position taken already fails the write.
func TestInsertHistory(t *testing.T) {
	db, err := Open(Options{Path: filepath.Join(t.TempDir(), "h.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.MigrateRooms(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var rows []HistoryRow
	for i := range 2*historyChunk + 5 {
		rows = append(rows, HistoryRow{Pos: int64(i) - 100, EventNID: int64(1000 + i)})
	}
	if err := db.Write(ctx, func(tx *Tx) error { return InsertHistory(tx, 7, rows) }); err != nil {
		t.Fatal(err)
	}
	var got []HistoryRow
	err = db.Write(ctx, func(tx *Tx) error {
		rs, err := tx.Query(`SELECT pos, event_nid FROM stream WHERE room_nid = 7 AND adds = x'' AND removes = x'' ORDER BY pos`)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var r HistoryRow
			if err := rs.Scan(&r.Pos, &r.EventNID); err != nil {
				return err
			}
			got = append(got, r)
		}
		return rs.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, rows) {
		t.Fatalf("stream holds %v,\nwant %v", got, rows)
	}
	err = db.Write(ctx, func(tx *Tx) error {
		return InsertHistory(tx, 7, []HistoryRow{{Pos: -200, EventNID: 1}, {Pos: -100, EventNID: 2}})
	})
	if err == nil {
		t.Fatal("a taken position was written again")
	}
	var lowest int64
	err = db.Write(ctx, func(tx *Tx) (err error) { lowest, err = LowestStreamPos(tx); return err })
	if err != nil || lowest != -100 {
		t.Fatalf("after a failed write the lowest position is %d (%v), want -100 (nothing of it kept)", lowest, err)
	}
}
