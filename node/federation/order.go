package federation

import (
	"context"
	"errors"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
	"hearth/node/storage"
)

// serverOf is the server part of a user ID ("" if it has none).
func serverOf(userID string) string {
	if i := strings.IndexByte(userID, ':'); i >= 0 && strings.HasPrefix(userID, "@") {
		return userID[i+1:]
	}
	return ""
}

// roomIDServer is the server a room ID names, for room versions whose
// IDs carry one ("" for version 12 rooms, whose IDs do not).
func roomIDServer(roomID string) string {
	if i := strings.IndexByte(roomID, ':'); i >= 0 {
		return roomID[i+1:]
	}
	return ""
}

// createEventID is the create event's ID in rooms whose ID is derived from
// it (version 12), which leave it out of auth_events; "" otherwise.
func createEventID(p gomatrixserverlib.PDU) string {
	verImpl, err := gomatrixserverlib.GetRoomVersion(p.Version())
	if err != nil || !verImpl.DomainlessRoomIDs() {
		return ""
	}
	return "$" + strings.TrimPrefix(p.RoomID().String(), "!")
}

// authDeps is every event p's auth names, the implied create event too.
func authDeps(p gomatrixserverlib.PDU) []string {
	ids := p.AuthEventIDs()
	if c := createEventID(p); c != "" && !(p.Type() == spec.MRoomCreate && p.StateKeyEquals("")) {
		ids = append(ids, c)
	}
	return ids
}

func prevDeps(p gomatrixserverlib.PDU) []string { return p.PrevEventIDs() }

// topoOrder sorts events so that each comes after those of them it
// depends on (deps), and otherwise by depth: the order to input them in.
func topoOrder(evs []gomatrixserverlib.PDU, deps func(gomatrixserverlib.PDU) []string) []gomatrixserverlib.PDU {
	sorted := append([]gomatrixserverlib.PDU{}, evs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Depth() < sorted[j].Depth() })
	byID := make(map[string]gomatrixserverlib.PDU, len(sorted))
	for _, e := range sorted {
		byID[e.EventID()] = e
	}
	out := make([]gomatrixserverlib.PDU, 0, len(sorted))
	state := make(map[string]uint8, len(sorted)) // 1: visiting, 2: done
	// Iterative depth-first search: auth chains can be long.
	type frame struct {
		ev   gomatrixserverlib.PDU
		deps []string
	}
	for _, root := range sorted {
		if state[root.EventID()] != 0 {
			continue
		}
		stack := []frame{{root, deps(root)}}
		state[root.EventID()] = 1
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if len(top.deps) == 0 {
				state[top.ev.EventID()] = 2
				out = append(out, top.ev)
				stack = stack[:len(stack)-1]
				continue
			}
			d := top.deps[0]
			top.deps = top.deps[1:]
			if dep, ok := byID[d]; ok && state[d] == 0 {
				state[d] = 1
				stack = append(stack, frame{dep, deps(dep)})
			}
		}
	}
	return out
}

// parseEvents parses other servers' events of one room, dropping any that
// do not parse or belong to another room.
func parseEvents(version gomatrixserverlib.RoomVersion, roomID string, raws []spec.RawJSON) []gomatrixserverlib.PDU {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil
	}
	out := make([]gomatrixserverlib.PDU, 0, len(raws))
	seen := map[string]bool{}
	for _, raw := range raws {
		p, err := roomserver.ParseUntrusted(verImpl, raw)
		if err != nil || p.RoomID().String() != roomID || seen[p.EventID()] {
			continue
		}
		seen[p.EventID()] = true
		out = append(out, p)
	}
	return out
}

// known reports which of ids are stored (rejected ones included: they
// are not fetched again).
func (f *Federation) known(ctx context.Context, ids []string) (map[string]bool, error) {
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		_, err := f.db.EventByID(ctx, id)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, nil
}

// extremities are a room's forward extremities (what get_missing_events
// calls earliest_events) and the least depth among them: older history
// than that is backfill's business, not a gap's.
func (f *Federation) extremities(ctx context.Context, roomID string) ([]string, int64, error) {
	row, err := f.db.RoomByID(ctx, roomID)
	if err != nil {
		return nil, 0, err
	}
	evs, err := f.db.EventsByNID(ctx, row.Extremities)
	if err != nil {
		return nil, 0, err
	}
	ids := make([]string, 0, len(evs))
	var minDepth int64
	for i, e := range evs {
		ids = append(ids, e.ID)
		if i == 0 || e.Depth < minDepth {
			minDepth = e.Depth
		}
	}
	return ids, minDepth, nil
}
