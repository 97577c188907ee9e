package roomserver

import (
	"encoding/json"
	"maps"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/storage"
)

var jsonUnmarshal = json.Unmarshal

// resolve merges diverging room states with the room version's state
// resolution algorithm (v2, or v2.1 for room version 12).
func (r *room) resolve(tx *storage.Tx, sets []*snapshot) (stateMap, error) {
	same := true
	for _, s := range sets[1:] {
		// Siblings on one tip (concurrent messages) share a snapshot.
		if s.nid != 0 && s.nid == sets[0].nid {
			continue
		}
		if s.blocks != sets[0].blocks && !maps.Equal(s.state, sets[0].state) {
			same = false
			break
		}
	}
	if same {
		return sets[0].state, nil
	}
	stateSets := make([][]gomatrixserverlib.PDU, len(sets))
	for i, s := range sets {
		nids := make([]int64, 0, len(s.state))
		for _, v := range s.state {
			nids = append(nids, v)
		}
		rows, err := storage.EventsByNIDTx(tx, nids)
		if err != nil {
			return nil, err
		}
		for _, row := range rows {
			p, err := r.rs.parse(r.row.Version, row.ID, row.JSON, row.Redacted)
			if err != nil {
				return nil, err
			}
			stateSets[i] = append(stateSets[i], p)
		}
	}
	authChain, rejected, err := r.authChain(tx, stateSets)
	if err != nil {
		return nil, err
	}
	resolved, err := gomatrixserverlib.ResolveConflictsNew(
		gomatrixserverlib.RoomVersion(r.row.Version), stateSets, authChain, userIDForSender,
		func(id string) bool { return rejected[id] })
	if err != nil {
		return nil, err
	}
	out := make(stateMap, len(resolved))
	for _, p := range resolved {
		row, err := storage.EventByIDTx(tx, p.EventID())
		if err != nil {
			return nil, err
		}
		out[stateKeyNIDs{row.TypeNID, row.KeyNID}] = row.NID
	}
	return out, nil
}

// authChain returns the full auth chain of every event in the state sets
// (with the create event, which room version 12 leaves out of
// auth_events), and which of its events were rejected. The state sets'
// own events are included: v2.1 looks conflicted events up there too.
func (r *room) authChain(tx *storage.Tx, sets [][]gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, map[string]bool, error) {
	seen := map[string]bool{}
	rejected := map[string]bool{}
	var queue []string
	for _, set := range sets {
		for _, p := range set {
			queue = append(queue, p.EventID())
		}
	}
	if c := r.createEventID(); c != "" {
		queue = append(queue, c)
	}
	var chain []gomatrixserverlib.PDU
	for len(queue) > 0 {
		id := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if seen[id] {
			continue
		}
		seen[id] = true
		row, err := storage.EventByIDTx(tx, id)
		if err != nil {
			continue // not held: resolution works with what we have
		}
		p, err := r.rs.parse(r.row.Version, row.ID, row.JSON, row.Redacted)
		if err != nil {
			return nil, nil, err
		}
		if row.Rejected {
			rejected[id] = true
		}
		chain = append(chain, p)
		queue = append(queue, p.AuthEventIDs()...)
	}
	return chain, rejected, nil
}
