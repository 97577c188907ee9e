package syncapi

import (
	"encoding/json"
	"errors"
	"slices"

	"hearth/node/storage"
)

// syncRoom adds one room to the response if it belongs there.
func (rd *reader) syncRoom(res *syncResponse, req *syncRequest, ur storage.UserRoom, since int64) error {
	rm := roomInfo{ur.RoomNID, ur.RoomID, ur.Version}
	initial := req.since == nil
	changed := initial || ur.Pos > since // membership changed since the token
	switch ur.Membership {
	case "join":
		acc := &access{membership: "join", pos: ur.Pos, shared: true, limit: rd.readPos}
		switch {
		case initial:
			return rd.joined(res, req, rm, acc, 0, true, false)
		case changed:
			was, err := rd.joinedAt(rm, ur, since)
			if err != nil {
				return err
			}
			if !was { // a new join: the whole room, from scratch
				return rd.joined(res, req, rm, acc, 0, true, true)
			}
		}
		if ur.LatestPos > since || req.fullState {
			return rd.joined(res, req, rm, acc, since, req.fullState, false)
		}
	case "invite":
		if changed || req.fullState {
			return rd.invited(res, rm, ur, "invite")
		}
	case "knock":
		if changed || req.fullState {
			return rd.invited(res, rm, ur, "knock")
		}
	case "leave", "ban":
		switch {
		case !initial && ur.Pos > since:
			return rd.left(res, req, rm, ur, since, req.fullState)
		case (initial || req.fullState) && req.filter.Room.IncludeLeave:
			return rd.left(res, req, rm, ur, 0, true)
		}
	}
	return nil
}

// joinedAt reports whether the user was already joined at stream position
// since, given that their membership (now join) changed after it. A join
// that follows a join (a profile change) is not a new join. It walks back
// through the user's member events using each row's removes; past a few
// steps it answers false, which resends the full state: wasteful, never
// wrong.
func (rd *reader) joinedAt(rm roomInfo, ur storage.UserRoom, since int64) (bool, error) {
	memberType, err := rd.memberType()
	if err != nil {
		return false, err
	}
	cur, err := rd.snap.EventsByNID([]int64{ur.EventNID})
	if err != nil || len(cur) == 0 {
		return false, err
	}
	userKeyNID := cur[0].KeyNID
	pos := ur.Pos
	for step := 0; step < 16; step++ {
		if pos <= since {
			return true, nil // joined (checked below) at a position the client had seen
		}
		_, _, _, removes, err := rd.snap.StreamRowAt(pos)
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		nids, err := storage.UnpackNIDs(removes)
		if err != nil {
			return false, err
		}
		evs, err := rd.snap.EventsByNID(nids)
		if err != nil {
			return false, err
		}
		var prev *storage.SyncEvent
		for i := range evs {
			if evs[i].TypeNID == memberType && evs[i].KeyNID == userKeyNID {
				prev = &evs[i]
			}
		}
		if prev == nil || prev.StreamPos == 0 {
			return false, nil
		}
		if ev := rd.event(rm, prev); ev == nil || ev.Membership != "join" {
			return false, nil
		}
		pos = prev.StreamPos
	}
	return false, nil
}

// joined adds a joined room: the timeline after position after (0: from
// the newest events back), and the state at its start — in full, or as
// the changes since after.
func (rd *reader) joined(res *syncResponse, req *syncRequest, rm roomInfo, acc *access, after int64, full, newJoin bool) error {
	tl, state, err := rd.timelineAndState(req, rm, acc, rd.currentState(rm), after, rd.readPos, full)
	if err != nil {
		return err
	}
	if newJoin {
		tl.Limited = true
	}
	res.Rooms.Join[rm.id] = &joinedRoom{
		State:       eventList{Events: state},
		Timeline:    tl,
		Ephemeral:   newEventList(),
		AccountData: newEventList(),
	}
	return nil
}

// left adds a room the user left or was banned from: its timeline up to
// the leave, and the state at the timeline's start, worked out from the
// state just after the leave.
func (rd *reader) left(res *syncResponse, req *syncRequest, rm roomInfo, ur storage.UserRoom, after int64, full bool) error {
	evs, err := rd.snap.EventsByNID([]int64{ur.EventNID})
	if err != nil {
		return err
	}
	if len(evs) == 0 || evs[0].StreamPos == 0 {
		// A leave that never entered the stream (e.g. a rejected remote
		// invite): there is nothing to show but the room's departure.
		res.Rooms.Leave[rm.id] = &leftRoom{State: newEventList(), Timeline: timeline{Events: []json.RawMessage{}}, AccountData: newEventList()}
		return nil
	}
	// A user who never joined (a rejected or withdrawn invite, a ban
	// from outside) sees only their own departure, not the room's history.
	prev, err := rd.previousMembership(rm, ur)
	if err != nil {
		return err
	}
	if prev != "join" {
		ev := rd.event(rm, &evs[0])
		tl := timeline{Events: []json.RawMessage{}}
		if ev != nil && req.filter.federationFormat() {
			if tl.Events, err = rd.federationEvents(rm, []*event{ev}); err != nil {
				return err
			}
		} else if ev != nil {
			tl.Events = append(tl.Events, ev.JSON)
		}
		res.Rooms.Leave[rm.id] = &leftRoom{State: newEventList(), Timeline: tl, AccountData: newEventList()}
		return nil
	}
	acc := &access{membership: ur.Membership, pos: ur.Pos, shared: true, limit: ur.Pos}
	tl, state, err := rd.timelineAndState(req, rm, acc, rd.stateAfter(&evs[0]), after, ur.Pos, full)
	if err != nil {
		return err
	}
	res.Rooms.Leave[rm.id] = &leftRoom{State: eventList{Events: state}, Timeline: tl, AccountData: newEventList()}
	return nil
}

// timelineAndState builds a room's timeline (after < pos <= upto) and the
// state at its start, from src, the state at upto: in full, or only what
// changed between after and the timeline's start. The timeline holds the
// events the user may see (history visibility, ignored senders); the
// state and limited follow the stream rows, whatever was left out.
func (rd *reader) timelineAndState(req *syncRequest, rm roomInfo, acc *access, src stateSource, after, upto int64, full bool) (timeline, []json.RawMessage, error) {
	tf := &req.filter.Room.Timeline
	limit := tf.limit(defaultTimelineLimit)
	var window []storage.StreamRow
	var evs []*event
	var more bool
	var err error
	if tf.allowsRoom(rm.id) {
		if window, evs, more, err = rd.scan(rm, after, upto, true, limit, tf); err != nil {
			return timeline{}, nil, err
		}
	} else {
		more = after < upto
	}
	// The timeline starts at its oldest row; between after and it is the
	// gap whose state changes the client has not seen.
	start := upto + 1
	if len(window) > 0 {
		start = window[len(window)-1].Pos
	}
	slices.Reverse(evs) // oldest first
	scanned := len(evs) > 0
	if evs, err = rd.readable(rm, acc, evs); err != nil {
		return timeline{}, nil, err
	}
	members := []string{rd.user}
	seen := map[string]bool{rd.user: true}
	for _, ev := range evs {
		if !seen[ev.Sender] {
			seen[ev.Sender] = true
			members = append(members, ev.Sender)
		}
	}

	// A gap longer than maxDeltaGap positions gets the full state: always
	// correct, and it bounds the rows a delta reads whatever the room did.
	q := &stateQuery{all: full || (more && start-after > maxDeltaGap)}
	if !q.all && more {
		var all bool
		if q.keys, all, err = rd.changedKeys(rm, after, start); err != nil {
			return timeline{}, nil, err
		}
		q.all = all
	}
	sf := &req.filter.Room.State
	if sf.LazyLoadMembers && (!q.empty() || len(evs) > 0) {
		// Lazy loading sends the timeline senders' members, changed or
		// not, so the client can show who spoke, and no other members.
		if err := rd.lazyMembers(q, members); err != nil {
			return timeline{}, nil, err
		}
	}
	var state []*event
	if !q.empty() {
		st, err := src(q)
		if err != nil {
			return timeline{}, nil, err
		}
		if err := rd.rewind(st, window, q); err != nil {
			return timeline{}, nil, err
		}
		if state, err = rd.stateEvents(rm, st, sf); err != nil {
			return timeline{}, nil, err
		}
	}
	if req.lazyKey != "" {
		// Without include_redundant_members a member event this device
		// already has (under this filter) is not sent again.
		state = rd.s.lazy.drop(req.lazyKey, rm.id, state)
		rd.s.lazy.record(req.lazyKey, rm.id, state, evs)
	}
	var tevs, sjson []json.RawMessage
	if req.filter.federationFormat() {
		if tevs, err = rd.federationEvents(rm, evs); err != nil {
			return timeline{}, nil, err
		}
		if sjson, err = rd.federationEvents(rm, state); err != nil {
			return timeline{}, nil, err
		}
	} else {
		tjson, err := rd.withTxnIDs(rm, evs)
		if err != nil {
			return timeline{}, nil, err
		}
		tevs = rawList(tjson)
		sjson = make([]json.RawMessage, len(state))
		for i, ev := range state {
			sjson[i] = ev.JSON
		}
	}
	tl := timeline{Events: tevs, Limited: more}
	if scanned || more {
		tl.PrevBatch = pageToken(start - 1)
	}
	return tl, sjson, nil
}

const defaultTimelineLimit = 10

// maxDeltaGap is the longest stream gap (in positions, all rooms counted)
// for which a state delta is worked out.
const maxDeltaGap = 10000
