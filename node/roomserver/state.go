package roomserver

import (
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/storage"
)

// numBlocks is how many blocks a snapshot is split into. An entry's block
// is fixed by its (type, state key), so a state change rewrites one small
// block and every other block is shared with the previous snapshot.
const numBlocks = 64

type tuple = gomatrixserverlib.StateKeyTuple

// entry is one current state event with its NIDs and parsed form.
type entry struct {
	typeNID, keyNID, eventNID int64
	pdu                       gomatrixserverlib.PDU
}

func bucketOf(typeNID, keyNID int64) int {
	h := uint64(typeNID)*0x9E3779B97F4A7C15 ^ uint64(keyNID)*0xC2B2AE3D27D4EB4F
	return int((h >> 32) % numBlocks)
}

// roomState is a room's current state held in memory by its worker: the
// state map answers auth questions without touching the database, and
// blocks mirror the stored snapshot so a change rewrites one block.
type roomState struct {
	snapshot int64
	blocks   [numBlocks]int64
	state    map[tuple]*entry
	// undo records replaced entries so a refused request can be rolled
	// back without copying the state map.
	undo []undo
}

type undo struct {
	k   tuple
	old *entry
}

// put replaces one entry, remembering the old one.
func (s *roomState) put(k tuple, e *entry) {
	s.undo = append(s.undo, undo{k, s.state[k]})
	s.state[k] = e
}

// remove deletes one entry, remembering it.
func (s *roomState) remove(k tuple) {
	if old := s.state[k]; old != nil {
		s.undo = append(s.undo, undo{k, old})
		delete(s.state, k)
	}
}

// rollback undoes every put since the undo log had length mark.
func (s *roomState) rollback(mark int) {
	for i := len(s.undo) - 1; i >= mark; i-- {
		u := s.undo[i]
		if u.old == nil {
			delete(s.state, u.k)
		} else {
			s.state[u.k] = u.old
		}
	}
	s.undo = s.undo[:mark]
}

// AuthEventProvider over the current state.
func (s *roomState) get(typ, key string) (gomatrixserverlib.PDU, error) {
	if e := s.state[tuple{EventType: typ, StateKey: key}]; e != nil {
		return e.pdu, nil
	}
	return nil, nil
}
func (s *roomState) Create() (gomatrixserverlib.PDU, error) { return s.get(spec.MRoomCreate, "") }
func (s *roomState) JoinRules() (gomatrixserverlib.PDU, error) {
	return s.get(spec.MRoomJoinRules, "")
}
func (s *roomState) PowerLevels() (gomatrixserverlib.PDU, error) {
	return s.get(spec.MRoomPowerLevels, "")
}
func (s *roomState) Member(k spec.SenderID) (gomatrixserverlib.PDU, error) {
	return s.get(spec.MRoomMember, string(k))
}
func (s *roomState) ThirdPartyInvite(k string) (gomatrixserverlib.PDU, error) {
	return s.get(spec.MRoomThirdPartyInvite, k)
}
func (s *roomState) Valid() bool { return true }

// set replaces the state at (type, key) and stores the rewritten block and
// the new snapshot. It returns the replaced entry, if any.
func (s *roomState) set(tx *storage.Tx, roomNID int64, e *entry) (*entry, error) {
	k := tuple{EventType: e.pdu.Type(), StateKey: *e.pdu.StateKey()}
	old := s.state[k]
	s.put(k, e)
	if err := s.rewrite(tx, roomNID, bucketOf(e.typeNID, e.keyNID)); err != nil {
		return nil, err
	}
	return old, nil
}

// rewrite stores a new block for bucket b and a new snapshot.
func (s *roomState) rewrite(tx *storage.Tx, roomNID int64, b int) error {
	var entries []storage.StateEntry
	for _, e := range s.state {
		if bucketOf(e.typeNID, e.keyNID) == b {
			entries = append(entries, storage.StateEntry{TypeNID: e.typeNID, KeyNID: e.keyNID, EventNID: e.eventNID})
		}
	}
	slices.SortFunc(entries, compareEntries)
	nid, err := storage.InsertStateBlock(tx, entries)
	if err != nil {
		return err
	}
	s.blocks[b] = nid
	s.snapshot, err = storage.InsertSnapshot(tx, roomNID, s.blocks[:])
	return err
}
