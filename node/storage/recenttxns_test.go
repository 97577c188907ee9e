package storage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"
)

// A device's transaction IDs come back for its own events only, the same
// whether they are remembered (events this process committed) or read
// from the table (events from before it opened the database, or older
// than what it remembers); a write undone under its savepoint leaves
// nothing behind, though the next write reuses its event's NID.
func TestTxnIDsOfEvents(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "h.db")
	var room int64
	n := 0
	// send stores an event, with a transaction of device's if txn != "".
	send := func(tx *Tx, device, txn string) (int64, error) {
		n++
		nid, err := InsertEvent(tx, &Event{RoomNID: room, ID: fmt.Sprintf("$e%d", n), TypeNID: 15, JSON: []byte(`{}`)})
		if err != nil || txn == "" {
			return nid, err
		}
		return nid, InsertTxn(tx, device, room, txn, nid)
	}
	want := func(ss *SyncStore, device string, nids []int64, expect map[int64]string) {
		t.Helper()
		snap, err := ss.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer snap.Close()
		got, err := snap.TxnIDs(device, room, nids)
		if err != nil {
			t.Fatal(err)
		}
		for nid, txn := range expect {
			if got[nid] != txn {
				t.Fatalf("%s's transaction of event %d: %q, want %q", device, nid, got[nid], txn)
			}
		}
		if len(got) != len(expect) {
			t.Fatalf("%s's transactions: %d, want %d", device, len(got), len(expect))
		}
	}

	db, ss := openSyncStore(t, Options{Path: path})
	var e1, e2, e3 int64
	err := db.Write(ctx, func(tx *Tx) (err error) {
		if room, err = InsertRoom(tx, "!r:x", "11"); err != nil {
			return err
		}
		if e1, err = send(tx, "D", "a"); err != nil {
			return err
		}
		if e2, err = send(tx, "D", ""); err != nil {
			return err
		}
		e3, err = send(tx, "E", "c")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	all := []int64{e1, e2, e3}
	want(ss, "D", all, map[int64]string{e1: "a"})
	want(ss, "E", all, map[int64]string{e3: "c"})
	want(ss, "F", all, map[int64]string{})
	if _, unknown := db.recent.lookup(deviceHash("D"), all); len(unknown) != 0 {
		t.Fatalf("events %v of this process not remembered", unknown)
	}

	// Two writes share a commit, and the second fails after storing an
	// event and its transaction; the next commit's event gets its NID.
	var kept, undone, reused int64
	refused := errors.New("refused")
	batch := []*writeReq{
		{ctx: ctx, err: make(chan error, 1), fn: func(tx *Tx) (err error) {
			kept, err = send(tx, "D", "y")
			return err
		}},
		{ctx: ctx, err: make(chan error, 1), fn: func(tx *Tx) (err error) {
			if undone, err = send(tx, "D", "x"); err != nil {
				return err
			}
			return refused
		}},
	}
	db.commit(batch)
	if err := <-batch[0].err; err != nil {
		t.Fatal(err)
	}
	if err := <-batch[1].err; !errors.Is(err, refused) {
		t.Fatalf("failing write: %v", err)
	}
	if err := db.Write(ctx, func(tx *Tx) (err error) { reused, err = send(tx, "D", ""); return err }); err != nil {
		t.Fatal(err)
	}
	if reused != undone {
		t.Fatalf("the next event is %d, the undone one was %d: the test needs them equal", reused, undone)
	}
	want(ss, "D", []int64{kept, reused}, map[int64]string{kept: "y"})

	// Past what is remembered, the oldest are read from the table.
	many := map[int64]string{}
	err = db.Write(ctx, func(tx *Tx) error {
		for i := range maxRecentTxns + 10 {
			nid, err := send(tx, "D", fmt.Sprintf("m%d", i))
			if err != nil {
				return err
			}
			many[nid] = fmt.Sprintf("m%d", i)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	nids := append([]int64{e1, e2, kept, reused}, slices.Collect(maps.Keys(many))...)
	expect := maps.Clone(many)
	expect[e1], expect[kept] = "a", "y"
	want(ss, "D", nids, expect)
	if _, unknown := db.recent.lookup(deviceHash("D"), nids); len(unknown) < 14 {
		t.Fatalf("%d events not remembered, want the 14 oldest at least", len(unknown))
	}

	// A new process remembers nothing yet: all from the table.
	ss.Close()
	db.Close()
	_, ss = openSyncStore(t, Options{Path: path})
	want(ss, "D", all, map[int64]string{e1: "a"})
	want(ss, "E", all, map[int64]string{e3: "c"})
}
