package syncapi

import (
	"fmt"

	"hearth/node/storage"
)

// maxHeroes is how many members name a room without a name (MSC4186,
// as the spec's room summary).
const maxHeroes = 5

// slidingState reads the current state entries a sliding room needs:
// those required_state names (with $ME and $LAZY resolved), the name and
// the canonical alias, each by key. Only a wildcard in required_state
// reads the whole state, because the client asked for all of it.
func (rd *reader) slidingState(rm roomInfo, m *stateMatcher, senders map[string]bool) ([]storage.StateEntry, error) {
	if m.wildcard {
		entries, err := rd.snap.CurrentState(rm.nid)
		if err != nil {
			return nil, fmt.Errorf("syncapi: current state of %s: %w", rm.id, err)
		}
		return entries, nil
	}
	types := []string{"m.room.name", "m.room.canonical_alias"}
	keys := []string{""}
	expand := func(p []string) []string {
		switch p[1] {
		case "$ME":
			return []string{rd.user}
		case "$LAZY":
			if p[0] != "m.room.member" {
				return nil
			}
			out := make([]string, 0, len(senders))
			for s := range senders {
				out = append(out, s)
			}
			return out
		}
		return []string{p[1]}
	}
	for _, p := range m.pairs {
		types = append(types, p[0])
		keys = append(keys, expand(p)...)
	}
	typeNIDs, err := rd.typeNIDs(types)
	if err != nil {
		return nil, err
	}
	byNID, err := rd.snap.KeyNIDs(keys)
	if err != nil {
		return nil, fmt.Errorf("syncapi: state key NIDs: %w", err)
	}
	keyNIDs := make(map[string]int64, len(byNID))
	for n, k := range byNID {
		keyNIDs[k] = n
	}
	seen := map[[2]int64]bool{}
	var pairs [][2]int64
	add := func(typ string, key string) {
		t, ok := typeNIDs[typ]
		if !ok || t == 0 {
			return // no event of the type exists anywhere
		}
		k, ok := keyNIDs[key]
		if !ok {
			return
		}
		if pk := [2]int64{t, k}; !seen[pk] {
			seen[pk] = true
			pairs = append(pairs, pk)
		}
	}
	add("m.room.name", "")
	add("m.room.canonical_alias", "")
	for _, p := range m.pairs {
		for _, k := range expand(p) {
			add(p[0], k)
		}
	}
	return rd.stateByType(rm, pairs)
}

// stateByType reads current state entries by key, one index range per
// type (CurrentStateKeys' join can scan the room's whole state).
func (rd *reader) stateByType(rm roomInfo, pairs [][2]int64) ([]storage.StateEntry, error) {
	byType := map[int64][]int64{}
	var order []int64
	for _, p := range pairs {
		if _, ok := byType[p[0]]; !ok {
			order = append(order, p[0])
		}
		byType[p[0]] = append(byType[p[0]], p[1])
	}
	var out []storage.StateEntry
	for _, t := range order {
		entries, err := rd.snap.CurrentStateOf(rm.nid, t, byType[t])
		if err != nil {
			return nil, fmt.Errorf("syncapi: current state of %s: %w", rm.id, err)
		}
		out = append(out, entries...)
	}
	return out, nil
}

// heroes picks up to maxHeroes joined members other than the user, in
// user ID order, with their display names: a bounded index walk and one
// member event each, whatever the room's size.
func (rd *reader) heroes(rm roomInfo) ([]slidingHero, error) {
	ids, err := rd.snap.Heroes(rm.nid, rd.user, maxHeroes)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	keys, err := rd.memberKeys(ids)
	if err != nil {
		return nil, err
	}
	pairs := make([][2]int64, len(keys))
	for i, k := range keys {
		pairs[i] = [2]int64{k.typ, k.key}
	}
	entries, err := rd.stateByType(rm, pairs)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, len(entries))
	for i, e := range entries {
		nids[i] = e.EventNID
	}
	evs, err := rd.events(rm, nids)
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(evs))
	for _, ev := range evs {
		if ev.StateKey != nil {
			names[*ev.StateKey] = contentString(ev, "displayname")
		}
	}
	out := make([]slidingHero, len(ids))
	for i, id := range ids {
		out[i] = slidingHero{UserID: id, DisplayName: names[id]}
	}
	return out, nil
}
