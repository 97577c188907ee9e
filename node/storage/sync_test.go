package storage

import (
	"context"
	"fmt"
	"slices"
	"testing"
)

// ChangedRooms finds the same rooms, with the same columns, whichever of
// its three queries reads them (the gap picks one): the rooms whose
// membership changed or that got stream rows (events, or a state reset's
// row without one) after the token. The sync columns say what the
// queries for them say: where the user's main-timeline read receipts
// point, and the room's newest state change.
func TestChangedRoomsQueriesAgree(t *testing.T) {
	db, ss := openSyncStore(t, Options{})
	var err error
	ctx := context.Background()
	const user = "@u:x"
	rooms := map[string]int64{}
	var last int64
	n := 0
	posOf := map[string]int64{} // event ID → stream position
	// add appends an event (a state event if state) to a room's stream,
	// setting the user's membership if membership is not "".
	add := func(tx *Tx, room, membership string, state bool) error {
		n++
		ev := &Event{RoomNID: rooms[room], ID: fmt.Sprintf("$e%d", n), TypeNID: 1, JSON: []byte(`{}`)}
		if state {
			ev.KeyNID = int64(n)
		}
		nid, err := InsertEvent(tx, ev)
		if err != nil {
			return err
		}
		var adds []int64
		if state {
			adds = []int64{nid}
		}
		if last, err = AppendStream(tx, rooms[room], nid, adds, nil); err != nil {
			return err
		}
		if err := SetStreamPos(tx, nid, last); err != nil {
			return err
		}
		posOf[ev.ID] = last
		if membership != "" {
			return SetMembership(tx, user, rooms[room], membership, nid, last)
		}
		return nil
	}
	type step struct {
		room, membership string
		state            bool
	}
	steps := []step{
		{"A", "join", true}, {"B", "join", true}, {"D", "join", true}, {"F", "join", true}, {"E", "", true},
		{"A", "", false}, {"B", "", false}, {"A", "", true}, {"E", "", false},
		{"C", "join", true}, {"A", "", false}, {"D", "leave", true}, {"G", "invite", true},
		{"F", "", false}, {"E", "", false}, {"A", "", false}, {"C", "", false},
	}
	err = db.Write(ctx, func(tx *Tx) error {
		for _, r := range []string{"A", "B", "C", "D", "E", "F", "G"} {
			if rooms[r], err = InsertRoom(tx, "!"+r+":x", "11"); err != nil {
				return err
			}
		}
		for i, s := range steps {
			if err := add(tx, s.room, s.membership, s.state); err != nil {
				return err
			}
			if i == 14 { // a state reset: a row with state changes and no event
				if last, err = AppendStream(tx, rooms["F"], 0, []int64{1}, nil); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Receipts: main timeline (public and private) count, a thread's not.
	for _, r := range []Receipt{
		{RoomID: "!A:x", UserID: user, Type: "m.read", EventID: "$e8"},
		{RoomID: "!A:x", UserID: user, Type: "m.read.private", EventID: "$e11"},
		{RoomID: "!A:x", UserID: user, Type: "m.read", ThreadID: "$e6", EventID: "$e16"},
		{RoomID: "!C:x", UserID: user, Type: "m.read", ThreadID: "main", EventID: "$e10"},
		{RoomID: "!F:x", UserID: "@other:x", Type: "m.read", EventID: "$e14"},
	} {
		if _, err := db.PutReceipt(ctx, r); err != nil {
			t.Fatal(err)
		}
	}

	snap, err := ss.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	all, err := snap.UserRooms(user, true)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := snap.UserRooms(user, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, ur := range all {
		want, err := snap.OwnReadPos(ur.RoomID, user)
		if err != nil {
			t.Fatal(err)
		}
		changes, err := snap.StateChanges(ur.RoomNID, ur.StatePos, last+1, 100)
		if err != nil {
			t.Fatal(err)
		}
		if !ur.SyncCols || ur.ReadPos != want || ur.StatePos == 0 || len(changes) != 0 {
			t.Errorf("%s: sync columns %v %d %d, want read position %d and the newest state change", ur.RoomID, ur.SyncCols, ur.ReadPos, ur.StatePos, want)
		}
		if p := plain[i]; p.SyncCols || p.RoomID != ur.RoomID || p.LatestPos != ur.LatestPos {
			t.Errorf("%s: UserRooms without sync columns: %+v", ur.RoomID, p)
		}
		// The private receipt is the newer in A; a thread's does not count.
		if read := map[string]int64{"!A:x": posOf["$e11"], "!C:x": posOf["$e10"]}[ur.RoomID]; ur.ReadPos != read {
			t.Errorf("%s: read position %d, want %d", ur.RoomID, ur.ReadPos, read)
		}
	}
	key := func(u UserRoom) int64 { return u.RoomNID }
	for since := int64(0); since <= last; since++ {
		var want []UserRoom
		for _, ur := range all {
			if ur.Pos > since || ur.LatestPos > since {
				want = append(want, ur)
			}
		}
		for _, st := range []syncStmt{stChangedRoomsNear, stChangedRoomsTail, stChangedRoomsSeek} {
			got, err := scanUserRooms(snap.stmt(st).QueryContext(ctx, user, since))
			if err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(got, func(a, b UserRoom) int { return int(key(a) - key(b)) })
			if !slices.Equal(got, want) {
				t.Errorf("since %d, query %d:\n got %+v\nwant %+v", since, st, got, want)
			}
		}
	}
}
