package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
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

// TestFedTxnRecordsRideTheNextCommit: a transaction's record is found at
// once, is written by the next commit (whatever it writes), by a commit
// of its own when none comes, or when the database closes.
func TestFedTxnRecordsRideTheNextCommit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "h.db")
	open := func() *DB {
		db, err := Open(Options{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(db.MigrateRooms(), db.MigrateFederation()); err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open()
	stored := func(txnID string) bool {
		t.Helper()
		var n int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM fed_txns WHERE origin = 'b.test' AND txn_id = ?`, txnID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	answer := func(txnID string) string {
		t.Helper()
		b, err := db.FedTxnResponse(ctx, "b.test", txnID)
		if err != nil {
			t.Fatalf("%s: %v", txnID, err)
		}
		return string(b)
	}

	if err := db.PutFedTxn(ctx, "b.test", "t1", 1, []byte(`{"pdus":{"$1":{}}}`)); err != nil {
		t.Fatal(err)
	}
	if stored("t1") {
		t.Fatal("t1 took a commit of its own at once")
	}
	if got := answer("t1"); got != `{"pdus":{"$1":{}}}` {
		t.Fatalf("t1 before any commit: %s", got)
	}
	// Any commit writes it.
	if err := db.Write(ctx, func(tx *Tx) error {
		_, err := InsertRoom(tx, "!r:a", "11")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !stored("t1") || answer("t1") != `{"pdus":{"$1":{}}}` {
		t.Fatal("t1 not written by the next commit")
	}
	// A commit that fails does not lose it.
	db.PutFedTxn(ctx, "b.test", "t2", 2, []byte(`{"pdus":{}}`))
	if err := db.Write(ctx, func(tx *Tx) error { return errors.New("refused") }); err == nil {
		t.Fatal("a failing write succeeded")
	}
	if stored("t2") || answer("t2") != `{"pdus":{}}` {
		t.Fatal("t2 after a failed commit: written, or forgotten")
	}
	// With no other commit, it is written within fedTxnDelay.
	deadline := time.Now().Add(fedTxnDelay + 5*time.Second)
	for !stored("t2") {
		if time.Now().After(deadline) {
			t.Fatal("t2 never written")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Closing writes what waits.
	db.PutFedTxn(ctx, "b.test", "t3", 3, []byte(`{"pdus":{"$3":{}}}`))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open()
	defer db.Close()
	if !stored("t3") || answer("t3") != `{"pdus":{"$3":{}}}` || answer("t1") != `{"pdus":{"$1":{}}}` {
		t.Fatal("records lost across a restart")
	}
	if _, err := db.FedTxnResponse(ctx, "b.test", "t9"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an unknown transaction: %v", err)
	}
}
