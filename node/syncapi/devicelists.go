package syncapi

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"hearth/node/httputil"
	"hearth/node/storage"
)

// Device lists: an E2EE client must re-read a user's keys when they
// changed (device_lists.changed) and may forget them when it no longer
// shares a room with them (device_lists.left). A user is "changed" for
// the viewer when their devices or keys changed (the device-list stream,
// storage.MarkDeviceListChanged) while sharing a room with the viewer, or
// when they started sharing one (they joined a room of the viewer's, or
// the viewer joined one of theirs); "left" when they stopped sharing any.

// DeviceListChanged records that a local user's devices or keys changed
// (keys uploaded, a device deleted) and tells the servers of their rooms.
func (s *Syncer) DeviceListChanged(ctx context.Context, userID string, deviceIDs []string, deleted bool) error {
	pos, err := s.markDeviceList(ctx, userID)
	if err != nil {
		return err
	}
	if o := s.outbound(); o != nil && s.local(userID) {
		rooms, err := s.roomsOf(ctx, userID)
		if err != nil {
			return err
		}
		o.DeviceList(userID, deviceIDs, deleted, pos, rooms)
	}
	return nil
}

// ReceiveDeviceListUpdate records a remote user's device-list change
// from their server's EDU.
func (s *Syncer) ReceiveDeviceListUpdate(ctx context.Context, userID string) error {
	_, err := s.markDeviceList(ctx, userID)
	return err
}

func (s *Syncer) markDeviceList(ctx context.Context, userID string) (int64, error) {
	pos, err := s.db.MarkDeviceListChanged(ctx, userID)
	if err != nil {
		return 0, fmt.Errorf("syncapi: %w", err)
	}
	rooms, err := s.roomsOf(ctx, userID)
	if err != nil {
		return 0, err
	}
	advance := func(t *Token) { t.DeviceList = max(t.DeviceList, pos) }
	s.notify.notify(userKey(userID), advance)
	for _, r := range rooms {
		s.notify.notify(roomKey(r), advance)
	}
	return pos, nil
}

// deviceListDelta works out device_lists for the reader's user between
// two tokens: rooms are the user's rooms whose membership or events
// changed after from.Room.
func (rd *reader) deviceListDelta(from, to Token, rooms []storage.UserRoom) (changed, left []string, err error) {
	changedSet, leftSet := map[string]bool{}, map[string]bool{}
	users, err := rd.snap.DeviceListChanges(from.DeviceList, to.DeviceList)
	if err != nil {
		return nil, nil, err
	}
	if slices.Contains(users, rd.user) {
		changedSet[rd.user] = true
	}
	sharing, err := rd.sharing(users)
	if err != nil {
		return nil, nil, err
	}
	for _, u := range sharing {
		changedSet[u] = true
	}
	var maybeLeft []string
	for _, ur := range rooms {
		if ur.Membership != "join" && ur.Membership != "leave" && ur.Membership != "ban" {
			continue
		}
		if ur.SyncCols && ur.StatePos <= from.Room {
			continue // no member moved: no state changed after from
		}
		rm := roomInfo{ur.RoomNID, ur.RoomID, ur.Version}
		moves, err := rd.memberMoves(rm, from.Room, to.Room)
		if err != nil {
			return nil, nil, err
		}
		if m, ok := moves[rd.user]; ok && m.was != m.is {
			// The user joined or left: everyone in the room now changes.
			members, err := rd.snap.RoomJoined(rm.nid)
			if err != nil {
				return nil, nil, err
			}
			for _, u := range members {
				if u == rd.user {
					continue
				}
				if m.is {
					changedSet[u] = true
				} else {
					maybeLeft = append(maybeLeft, u)
				}
			}
			continue
		}
		for u, m := range moves {
			switch {
			case u == rd.user || m.was == m.is:
			case m.is:
				changedSet[u] = true
			default:
				maybeLeft = append(maybeLeft, u)
			}
		}
	}
	if len(maybeLeft) > 0 {
		still, err := rd.snap.Sharing(rd.user, maybeLeft)
		if err != nil {
			return nil, nil, err
		}
		for _, u := range maybeLeft {
			if !slices.Contains(still, u) {
				leftSet[u] = true
				delete(changedSet, u)
			}
		}
	}
	changed, left = make([]string, 0, len(changedSet)), make([]string, 0, len(leftSet))
	for u := range changedSet {
		changed = append(changed, u)
	}
	for u := range leftSet {
		left = append(left, u)
	}
	slices.Sort(changed)
	slices.Sort(left)
	return changed, left, nil
}

// sharing returns those of users who share a joined room with the
// reader's user. Users whose joined rooms the cache holds (local users
// who sync) are checked in memory against the reader's rooms; the others
// with one query.
func (rd *reader) sharing(users []string) ([]string, error) {
	if len(users) == 0 {
		return nil, nil
	}
	if rd.joinedRooms == nil {
		return rd.snap.Sharing(rd.user, users)
	}
	mine := make(map[string]bool, len(rd.joinedRooms))
	for _, r := range rd.joinedRooms {
		mine[r] = true
	}
	var out, ask []string
	for _, u := range users {
		rooms, ok := rd.s.joined.get(u)
		if !ok {
			ask = append(ask, u)
			continue
		}
		for _, r := range rooms {
			if mine[r] {
				out = append(out, u)
				break
			}
		}
	}
	more, err := rd.snap.Sharing(rd.user, ask)
	return append(out, more...), err
}

// move is whether a user was joined at the start of a range and is at
// its end.
type move struct{ was, is bool }

// memberMoves finds the users whose membership of a room changed in the
// stream positions (after, upto], from the rows' state adds and removes:
// the member event a range's first change removed is the membership at
// its start, the newest one in the range the membership at its end.
func (rd *reader) memberMoves(rm roomInfo, after, upto int64) (map[string]move, error) {
	if after >= upto {
		return nil, nil
	}
	nids, err := rd.snap.StateChanges(rm.nid, after, upto+1, maxDeltaRows)
	if errors.Is(err, storage.ErrTooManyChanges) {
		// Too much happened to say who moved: everyone present changed.
		members, err := rd.snap.RoomJoined(rm.nid)
		if err != nil {
			return nil, err
		}
		out := map[string]move{}
		for _, u := range members {
			out[u] = move{is: true}
		}
		return out, nil
	}
	if err != nil || len(nids) == 0 {
		return nil, err
	}
	evs, err := rd.events(rm, nids)
	if err != nil {
		return nil, err
	}
	type span struct {
		first, last       *event // oldest and newest change in the range
		before            *event // the membership the range started from
		firstPos, lastPos int64
	}
	spans := map[string]*span{}
	for _, ev := range evs {
		if ev.Type != "m.room.member" || ev.StateKey == nil {
			continue
		}
		sp := spans[*ev.StateKey]
		if sp == nil {
			sp = &span{}
			spans[*ev.StateKey] = sp
		}
		if ev.StreamPos > after && ev.StreamPos <= upto {
			if sp.last == nil || ev.StreamPos > sp.lastPos {
				sp.last, sp.lastPos = ev, ev.StreamPos
			}
			if sp.first == nil || ev.StreamPos < sp.firstPos {
				sp.first, sp.firstPos = ev, ev.StreamPos
			}
		} else if sp.before == nil || ev.StreamPos > sp.before.StreamPos {
			sp.before = ev
		}
	}
	out := make(map[string]move, len(spans))
	for u, sp := range spans {
		if sp.last == nil {
			continue
		}
		out[u] = move{was: sp.before != nil && sp.before.Membership == "join", is: sp.last.Membership == "join"}
	}
	return out, nil
}

// KeyChanges answers GET /keys/changes: the users whose keys changed or
// who stopped sharing a room with userID between two sync tokens.
// Malformed tokens are M_INVALID_PARAM.
func (s *Syncer) KeyChanges(ctx context.Context, userID, from, to string) (changed, left []string, err error) {
	f, err := ParseToken(from)
	if err != nil {
		return nil, nil, httputil.InvalidParam("malformed from token")
	}
	t, err := ParseToken(to)
	if err != nil {
		return nil, nil, httputil.InvalidParam("malformed to token")
	}
	rd, err := s.openReader(ctx, userID, "")
	if err != nil {
		return nil, nil, err
	}
	defer rd.close()
	pos, err := rd.snap.Positions(userID)
	if err != nil {
		return nil, nil, err
	}
	rd.readPos = pos.Room
	t.Room, t.DeviceList = min(t.Room, rd.readPos), min(t.DeviceList, pos.DeviceList)
	if f.Room >= t.Room && f.DeviceList >= t.DeviceList {
		return []string{}, []string{}, nil
	}
	rooms, err := rd.snap.ChangedRooms(userID, f.Room, rd.readPos)
	if err != nil {
		return nil, nil, err
	}
	return rd.deviceListDelta(f, t, rooms)
}
