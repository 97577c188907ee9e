package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
)

// openRooms opens the database at path with the rooms' tables.
func openRooms(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.MigrateRooms(); err != nil {
		db.Close()
		t.Fatal(err)
	}
	return db
}

// TestEventsByIDAndByDepth: the batch reads behind /backfill find events
// by ID (rejected ones too; unknown IDs skipped) and a room's events by
// depth, deepest first, within the bounds and the room, at least as many
// as asked for when there are.
func TestEventsByIDAndByDepth(t *testing.T) {
	db := openRooms(t, filepath.Join(t.TempDir(), "h.db"))
	defer db.Close()
	var err error
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
	db := openRooms(t, filepath.Join(t.TempDir(), "h.db"))
	defer db.Close()
	var err error
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

// TestStreamPositions: positions handed out before an event's row is
// written, and those AppendStream takes, follow one another across
// writes; an undone write's are handed out again, as nobody saw them; a
// reopened database goes on after the last.
func TestStreamPositions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.db")
	db := openRooms(t, path)
	ctx := context.Background()
	var got []int64
	appendOne := func(tx *Tx, at bool) error {
		if !at {
			pos, err := AppendStream(tx, 1, 10, nil, nil)
			got = append(got, pos)
			return err
		}
		pos, err := NextStreamPos(tx)
		if err != nil {
			return err
		}
		got = append(got, pos)
		return AppendStreamAt(tx, pos, 1, 10, nil, nil)
	}
	failed := errors.New("refused")
	write := func(fn func(*Tx) error) {
		t.Helper()
		if err := db.Write(ctx, fn); err != nil && !errors.Is(err, failed) {
			t.Fatal(err)
		}
	}
	write(func(tx *Tx) error { return errors.Join(appendOne(tx, false), appendOne(tx, true)) })
	write(func(tx *Tx) error { return errors.Join(appendOne(tx, true), failed) })
	write(func(tx *Tx) error { return appendOne(tx, true) })
	db.Close()

	db = openRooms(t, path)
	defer db.Close()
	write(func(tx *Tx) error { return appendOne(tx, true) })
	var stored []int64
	err := db.Write(ctx, func(tx *Tx) error {
		rs, err := tx.Query(`SELECT pos FROM stream ORDER BY pos`)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var p int64
			if err := rs.Scan(&p); err != nil {
				return err
			}
			stored = append(stored, p)
		}
		return rs.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{1, 2, 3, 3, 4}; !slices.Equal(got, want) {
		t.Errorf("positions handed out: %v, want %v", got, want)
	}
	if want := []int64{1, 2, 3, 4}; !slices.Equal(stored, want) {
		t.Errorf("positions stored: %v, want %v", stored, want)
	}
}
