package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

// openFederation opens a new database with the federation's tables.
func openFederation(t *testing.T) *DB {
	t.Helper()
	db, err := Open(Options{Path: filepath.Join(t.TempDir(), "h.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := errors.Join(db.MigrateRooms(), db.MigrateFederation()); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestEphemeralEDUsTrimmedDurableKept(t *testing.T) {
	db := openFederation(t)
	ctx := context.Background()
	if err := db.EnqueueEDU(ctx, []string{"b"}, []byte(`"room key"`), true, 2); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := db.EnqueueEDU(ctx, []string{"b"}, []byte(fmt.Sprintf(`"typing %d"`, i)), false, 2); err != nil {
			t.Fatal(err)
		}
	}
	_, edus, err := db.PeekQueue(ctx, "b", 50, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range edus {
		got = append(got, string(e.JSON))
	}
	want := []string{`"room key"`, `"typing 3"`, `"typing 4"`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("queue holds %v, want %v", got, want)
	}
}

// TestRequeuedPDUsGoFirstUnderFreshSeqs: events whose first send failed
// go in front of what was queued meanwhile, and their seqs (which name
// transactions) are never handed out twice, even once the queue is empty.
func TestRequeuedPDUsGoFirstUnderFreshSeqs(t *testing.T) {
	db := openFederation(t)
	ctx := context.Background()
	if _, err := db.FedCursor(ctx); err != nil { // the cursor starts
		t.Fatal(err)
	}
	if err := db.EnqueuePDUs(ctx, 7, []FedQueued{{"b", 3}, {"b", 4}}, nil); err != nil {
		t.Fatal(err)
	}
	floor, err := db.RequeuePDUs(ctx, []FedQueued{{"b", 1}, {"b", 2}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	seqs := func() []int64 {
		pdus, _, err := db.PeekQueue(ctx, "b", 50, 100)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, p := range pdus {
			out = append(out, p.Seq)
		}
		return out
	}
	got := seqs()
	if len(got) != 4 || got[0] != floor || got[1] != floor+1 || got[1] >= got[2] {
		t.Fatalf("queue seqs %v (requeued from %d): the requeued two must come first", got, floor)
	}
	if err := db.DequeueSent(ctx, "b", got[3], 0); err != nil {
		t.Fatal(err)
	}
	again, err := db.RequeuePDUs(ctx, []FedQueued{{"b", 5}}, floor)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(); len(got) != 1 || got[0] != again || again >= floor {
		t.Fatalf("requeued into an empty queue under seqs %v (floor %d, was %d): a seq was handed out again", got, again, floor)
	}
	if pos, err := db.FedCursor(ctx); err != nil || pos != 7 {
		t.Fatalf("cursor %d (%v): requeueing moved it", pos, err)
	}
}
