package syncapi

import (
	"errors"
	"fmt"
	"slices"

	"hearth/node/storage"
)

// stateKey is a (type NID, state key NID) pair.
type stateKey struct{ typ, key int64 }

// stateMap is a room state: (type, state key) → event NID.
type stateMap map[stateKey]int64

func newStateMap(entries []storage.StateEntry) stateMap {
	st := make(stateMap, len(entries))
	for _, e := range entries {
		st[stateKey{e.TypeNID, e.KeyNID}] = e.EventNID
	}
	return st
}

// keysOf finds the (type, state key) of event NIDs: from the state map,
// from rows' own events, and for the rest with one query.
func (rd *reader) keysOf(nids []int64, st stateMap, rows []storage.StreamRow) (map[int64]stateKey, error) {
	keys := make(map[int64]stateKey, len(nids))
	need := make(map[int64]bool, len(nids))
	for _, n := range nids {
		need[n] = true
	}
	for k, n := range st {
		if need[n] {
			keys[n] = k
		}
	}
	for i := range rows {
		e := &rows[i].Event
		if e.KeyNID != 0 && need[e.NID] {
			keys[e.NID] = stateKey{e.TypeNID, e.KeyNID}
		}
	}
	var missing []int64
	for n := range need {
		if _, ok := keys[n]; !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		entries, err := rd.snap.EventKeys(missing)
		if err != nil {
			return nil, fmt.Errorf("syncapi: state keys of events: %w", err)
		}
		for _, e := range entries {
			keys[e.EventNID] = stateKey{e.TypeNID, e.KeyNID}
		}
	}
	return keys, nil
}

// stateQuery says which entries of a room's state a request needs, so a
// sync of a big room reads what changed and who spoke, not every member.
type stateQuery struct {
	all        bool              // every entry...
	exceptType int64             // ...but those of this type (0: none)
	keys       map[stateKey]bool // and these
}

func (q *stateQuery) wants(k stateKey) bool {
	return (q.all && k.typ != q.exceptType) || q.keys[k]
}

func (q *stateQuery) empty() bool { return !q.all && len(q.keys) == 0 }

// restrict drops the entries q does not want.
func (q *stateQuery) restrict(st stateMap) {
	for k := range st {
		if !q.wants(k) {
			delete(st, k)
		}
	}
}

// stateSource loads what a query wants of the state at the newest end of
// a timeline window.
type stateSource func(q *stateQuery) (stateMap, error)

// currentState is a room's current state, read as narrowly as q allows.
func (rd *reader) currentState(rm roomInfo) stateSource {
	return func(q *stateQuery) (stateMap, error) {
		var entries []storage.StateEntry
		var err error
		switch {
		case q.all && q.exceptType == 0:
			entries, err = rd.snap.CurrentState(rm.nid)
		case q.all:
			entries, err = rd.snap.CurrentStateExcept(rm.nid, q.exceptType)
		}
		if err != nil {
			return nil, fmt.Errorf("syncapi: current state: %w", err)
		}
		var pairs [][2]int64
		for k := range q.keys {
			if !q.all || k.typ == q.exceptType {
				pairs = append(pairs, [2]int64{k.typ, k.key})
			}
		}
		more, err := rd.snap.CurrentStateKeys(rm.nid, pairs)
		if err != nil {
			return nil, fmt.Errorf("syncapi: current state: %w", err)
		}
		return newStateMap(append(entries, more...)), nil
	}
}

// stateAfter is the state just after an event (a left room's leave).
func (rd *reader) stateAfter(se *storage.SyncEvent) stateSource {
	return func(q *stateQuery) (stateMap, error) {
		st, err := rd.stateAfterEvent(se)
		if err != nil {
			return nil, err
		}
		q.restrict(st)
		return st, nil
	}
}

// rewind undoes stream rows (given newest first) on st for the keys q
// wants, leaving the state before the oldest of them. It uses only the
// rows' adds and removes — what the roomserver's state resolution decided
// — never the events.
func (rd *reader) rewind(st stateMap, rows []storage.StreamRow, q *stateQuery) error {
	type delta struct{ adds, removes []int64 }
	deltas := make([]delta, len(rows))
	var all []int64
	for i := range rows {
		a, err := storage.UnpackNIDs(rows[i].Adds)
		if err != nil {
			return err
		}
		r, err := storage.UnpackNIDs(rows[i].Removes)
		if err != nil {
			return err
		}
		deltas[i] = delta{a, r}
		all = append(append(all, a...), r...)
	}
	if len(all) == 0 {
		return nil
	}
	keys, err := rd.keysOf(all, st, rows)
	if err != nil {
		return err
	}
	for _, d := range deltas {
		for _, n := range d.adds {
			if k, ok := keys[n]; ok && q.wants(k) && st[k] == n {
				delete(st, k)
			}
		}
		for _, n := range d.removes {
			if k, ok := keys[n]; ok && q.wants(k) {
				st[k] = n
			}
		}
	}
	return nil
}

// stateAfterEvent is the room state just after an event: its snapshot
// (the state before it) with the event itself applied.
func (rd *reader) stateAfterEvent(se *storage.SyncEvent) (stateMap, error) {
	entries, err := rd.snap.SnapshotState(se.SnapshotNID)
	if err != nil {
		return nil, err
	}
	st := newStateMap(entries)
	if se.KeyNID != 0 {
		st[stateKey{se.TypeNID, se.KeyNID}] = se.NID
	}
	return st, nil
}

// maxDeltaRows bounds the state-changing rows a delta reads; past it the
// full state is sent, which is always correct.
const maxDeltaRows = 500

// changedKeys returns the keys that rows with after < pos < before
// changed, or all=true if there were too many to look at.
func (rd *reader) changedKeys(rm roomInfo, after, before int64) (keys map[stateKey]bool, all bool, err error) {
	nids, err := rd.snap.StateChanges(rm.nid, after, before, maxDeltaRows)
	if errors.Is(err, storage.ErrTooManyChanges) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("syncapi: state changes: %w", err)
	}
	byNID, err := rd.keysOf(nids, nil, nil)
	if err != nil {
		return nil, false, err
	}
	keys = make(map[stateKey]bool, len(byNID))
	for _, k := range byNID {
		keys[k] = true
	}
	return keys, false, nil
}

// memberKeys returns the member state keys of users.
func (rd *reader) memberKeys(users []string) ([]stateKey, error) {
	mt, err := rd.memberType()
	if err != nil {
		return nil, err
	}
	nids, err := rd.snap.KeyNIDs(users)
	if err != nil {
		return nil, fmt.Errorf("syncapi: member keys: %w", err)
	}
	out := make([]stateKey, 0, len(nids))
	for n := range nids {
		out = append(out, stateKey{mt, n})
	}
	return out, nil
}

// lazyMembers narrows q to lazy-loaded members: of member events, only
// those of users.
func (rd *reader) lazyMembers(q *stateQuery, users []string) error {
	mt, err := rd.memberType()
	if err != nil {
		return err
	}
	if q.keys == nil {
		q.keys = map[stateKey]bool{}
	}
	if q.all {
		q.exceptType = mt
	}
	for k := range q.keys {
		if k.typ == mt {
			delete(q.keys, k)
		}
	}
	keys, err := rd.memberKeys(users)
	if err != nil {
		return err
	}
	for _, k := range keys {
		q.keys[k] = true
	}
	return nil
}

// stateEvents loads the entries of st that the state filter allows (f
// may be nil), ordered by NID (roughly oldest first).
func (rd *reader) stateEvents(rm roomInfo, st stateMap, f *RoomEventFilter) ([]*event, error) {
	if f != nil && !f.allowsRoom(rm.id) {
		return nil, nil
	}
	typeFilter := f != nil && (f.Types != nil || len(f.NotTypes) > 0)
	var names map[int64]string
	if typeFilter {
		typeNIDs := make([]int64, 0, len(st))
		for k := range st {
			typeNIDs = append(typeNIDs, k.typ)
		}
		var err error
		if names, err = rd.typeNames(typeNIDs); err != nil {
			return nil, err
		}
	}
	nids := make([]int64, 0, len(st))
	for k, n := range st {
		if typeFilter && !f.allowsType(names[k.typ]) {
			continue
		}
		nids = append(nids, n)
	}
	slices.Sort(nids)
	evs, err := rd.events(rm, nids)
	if err != nil {
		return nil, err
	}
	if f != nil && (f.Senders != nil || len(f.NotSenders) > 0) {
		evs = slices.DeleteFunc(evs, func(e *event) bool { return !f.allowsSender(e.Sender) })
	}
	return evs, nil
}
