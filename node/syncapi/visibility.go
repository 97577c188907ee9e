package syncapi

import (
	"errors"
	"fmt"

	"hearth/node/httputil"
	"hearth/node/storage"
)

// History visibility. A user sees an event if, in the room's state just
// before it (its snapshot),
//   - m.room.history_visibility is world_readable, or
//   - the user's membership was join (their own member event counts as
//     what it sets, so they see their own join, invite and leave), or
//   - it was shared and the user is joined now, or joined before leaving
//     (then only up to their departure), or
//   - it was invited and the user's membership was invite.
//
// A history_visibility event itself is judged by the more permissive of
// the old and the new setting. With no setting the room is shared.
//
// Most reads never look at a snapshot: an event after the user's current
// join (their membership has not changed since) is visible whatever the
// setting.

// access is what a user may read of a room.
type access struct {
	membership string // current membership ("" none)
	pos        int64  // stream position where it last changed
	shared     bool   // joined now, or joined before leaving
	limit      int64  // the newest stream position they may read
}

// roomAccess resolves a room the user may read and how: members and
// former members (up to their departure), and anyone when the room is
// currently world-readable (then event by event). Others get M_FORBIDDEN,
// whether or not the room exists. Pages read with it are then filtered
// with readable. It reads the reader's positions (see openReader) with
// the room and membership: one statement.
func (rd *reader) roomAccess(roomID string) (roomInfo, *access, error) {
	forbidden := httputil.Forbidden("you are not a member of this room")
	maxPos, accountDataPos, ur, err := rd.snap.RoomAccess(roomID, rd.user)
	if errors.Is(err, storage.ErrNotFound) {
		return roomInfo{}, nil, forbidden
	}
	if err != nil {
		return roomInfo{}, nil, fmt.Errorf("syncapi: room access: %w", err)
	}
	rd.readPos, rd.accountDataPos = maxPos, accountDataPos
	rm := roomInfo{ur.RoomNID, roomID, ur.Version}
	acc := &access{limit: rd.readPos, membership: ur.Membership, pos: ur.Pos}
	switch acc.membership {
	case "join":
		acc.shared = true
		return rm, acc, nil
	case "leave", "ban":
		prev, err := rd.previousMembership(rm, ur)
		if err != nil {
			return roomInfo{}, nil, err
		}
		if prev == "join" {
			acc.shared, acc.limit = true, ur.Pos
			return rm, acc, nil
		}
	}
	wr, err := rd.worldReadable(rm)
	if err != nil {
		return roomInfo{}, nil, err
	}
	if !wr {
		return roomInfo{}, nil, forbidden
	}
	return rm, acc, nil
}

// worldReadable reports whether a room's current history visibility is
// world_readable.
func (rd *reader) worldReadable(rm roomInfo) (bool, error) {
	hv, empty, err := rd.hvKey()
	if err != nil {
		return false, err
	}
	entries, err := rd.snap.CurrentStateKeys(rm.nid, [][2]int64{{hv, empty}})
	if err != nil || len(entries) == 0 {
		return false, err
	}
	evs, err := rd.events(rm, []int64{entries[0].EventNID})
	if err != nil || len(evs) == 0 {
		return false, err
	}
	return evs[0].Visibility == "world_readable", nil
}

// readable keeps the events a user may read: those history visibility
// lets them see, less the non-state events of users they ignore. Every
// reader of room history (sync timelines, /messages, /context) passes its
// events through it.
func (rd *reader) readable(rm roomInfo, acc *access, evs []*event) ([]*event, error) {
	evs, err := rd.visible(rm, acc, evs)
	if err != nil {
		return nil, err
	}
	return rd.dropIgnored(evs)
}

// visible keeps the events the user may see.
func (rd *reader) visible(rm roomInfo, acc *access, evs []*event) ([]*event, error) {
	out := evs[:0:0]
	for _, ev := range evs {
		ok, err := rd.canSee(rm, acc, ev)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, ev)
		}
	}
	return out, nil
}

// canSee applies the rules above to one event.
func (rd *reader) canSee(rm roomInfo, acc *access, ev *event) (bool, error) {
	if ev.StreamPos > acc.limit {
		return false, nil
	}
	if acc.membership == "join" && ev.StreamPos > acc.pos {
		return true, nil
	}
	vs, err := rd.stateBefore(rm, ev.SnapshotNID)
	if err != nil {
		return false, err
	}
	hv, mem := vs.visibility, vs.membership
	if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == rd.user {
		mem = ev.Membership
	}
	if ev.Type == "m.room.history_visibility" && ev.StateKey != nil && *ev.StateKey == "" &&
		permissiveness[ev.Visibility] > permissiveness[hv] {
		hv = ev.Visibility
	}
	switch {
	case hv == "world_readable", mem == "join":
		return true, nil
	case hv == "shared":
		return acc.shared, nil
	case hv == "invited":
		return mem == "invite", nil
	}
	return false, nil
}

// permissiveness orders the settings; unknown ones rank lowest.
var permissiveness = map[string]int{"joined": 1, "invited": 2, "shared": 3, "world_readable": 4}

// visState is what visibility needs of a snapshot: its setting and the
// reader's membership in it.
type visState struct{ visibility, membership string }

// stateBefore reads a snapshot's visibility and the user's membership,
// through a cache: snapshots never change.
func (rd *reader) stateBefore(rm roomInfo, snapshotNID int64) (visState, error) {
	if snapshotNID == 0 { // an outlier: nothing is known of its state
		return visState{visibility: "joined"}, nil
	}
	userKey, err := rd.userKey()
	if err != nil {
		return visState{}, err
	}
	k := visKey{snapshotNID, userKey}
	if vs, ok := rd.s.vis.get(k); ok {
		return vs, nil
	}
	entries, err := rd.snap.SnapshotState(snapshotNID)
	if err != nil {
		return visState{}, fmt.Errorf("syncapi: state for visibility: %w", err)
	}
	hv, empty, err := rd.hvKey()
	if err != nil {
		return visState{}, err
	}
	mt, err := rd.memberType()
	if err != nil {
		return visState{}, err
	}
	var hvNID, memNID int64
	for _, e := range entries {
		switch {
		case e.TypeNID == hv && e.KeyNID == empty:
			hvNID = e.EventNID
		case e.TypeNID == mt && e.KeyNID == userKey:
			memNID = e.EventNID
		}
	}
	vs := visState{visibility: "shared"}
	var nids []int64
	for _, n := range []int64{hvNID, memNID} {
		if n != 0 {
			nids = append(nids, n)
		}
	}
	evs, err := rd.events(rm, nids)
	if err != nil {
		return visState{}, err
	}
	for _, ev := range evs {
		switch {
		case ev.NID == hvNID && ev.Visibility != "":
			vs.visibility = ev.Visibility
		case ev.NID == memNID:
			vs.membership = ev.Membership
		}
	}
	rd.s.vis.put(k, vs)
	return vs, nil
}

// userKey is the reader's user as a state key NID (-1: none exists, so
// no member event of theirs either).
func (rd *reader) userKey() (int64, error) {
	if rd.userKeyNID != 0 {
		return rd.userKeyNID, nil
	}
	m, err := rd.snap.KeyNIDs([]string{rd.user})
	if err != nil {
		return 0, fmt.Errorf("syncapi: user state key: %w", err)
	}
	rd.userKeyNID = -1
	for n := range m {
		rd.userKeyNID = n
	}
	return rd.userKeyNID, nil
}

// hvKey returns the NIDs of m.room.history_visibility and of the empty
// state key.
func (rd *reader) hvKey() (hv, empty int64, err error) {
	if hv, empty = rd.s.hvNID.Load(), rd.s.emptyNID.Load(); hv != 0 && empty != 0 {
		return hv, empty, nil
	}
	types, err := rd.typeNIDs([]string{"m.room.history_visibility"})
	if err != nil {
		return 0, 0, err
	}
	keys, err := rd.snap.KeyNIDs([]string{""})
	if err != nil {
		return 0, 0, fmt.Errorf("syncapi: empty state key: %w", err)
	}
	for n := range keys {
		empty = n
	}
	hv = types["m.room.history_visibility"]
	if hv != 0 && empty != 0 {
		rd.s.hvNID.Store(hv)
		rd.s.emptyNID.Store(empty)
	}
	return hv, empty, nil
}

// visCache maps (snapshot, user key) to what visibility read there.
type visCache = boundedCache[visKey, visState]

type visKey struct{ snapshot, user int64 }

const maxVisCache = 65536

func newVisCache() *visCache { return newBoundedCache[visKey, visState](maxVisCache) }
