package roomserver

import (
	"slices"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/storage"
)

// pduCache keeps parsed events by NID. Parsing an event (and working out
// its ID) costs more than reading it, and remote input checks every event
// against the same few state events over and over. A redaction replaces
// an event's JSON, so it drops the event from the cache.
type pduCache struct {
	mu sync.Mutex
	m  map[int64]gomatrixserverlib.PDU
}

const maxCachedPDUs = 8192

func (c *pduCache) get(nid int64) gomatrixserverlib.PDU {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[nid]
}

func (c *pduCache) put(nid int64, p gomatrixserverlib.PDU) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedPDUs {
		c.m = map[int64]gomatrixserverlib.PDU{} // crude, but bounded
	}
	c.m[nid] = p
}

func (c *pduCache) clear() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}

func (c *pduCache) drop(nid int64) {
	c.mu.Lock()
	delete(c.m, nid)
	c.mu.Unlock()
}

// pdusByNID returns the parsed events of the NIDs, from the cache where it
// can and the database (through tx) for the rest.
func (r *room) pdusByNID(tx *storage.Tx, nids []int64) (map[int64]gomatrixserverlib.PDU, error) {
	out := make(map[int64]gomatrixserverlib.PDU, len(nids))
	var missing []int64
	for _, nid := range nids {
		if p := r.rs.pdus.get(nid); p != nil {
			out[nid] = p
		} else {
			missing = append(missing, nid)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := storage.EventsByNIDTx(tx, missing)
	if err != nil {
		return nil, err
	}
	for _, row := range rows {
		p, err := r.rs.parse(r.row.Version, row.ID, row.JSON, row.Redacted)
		if err != nil {
			return nil, err
		}
		r.rs.pdus.put(row.NID, p)
		out[row.NID] = p
	}
	return out, nil
}

// authNIDs picks out of a full state the events that auth needs for ev:
// a handful of lookups instead of the whole room.
func (r *room) authNIDs(tx *storage.Tx, state stateMap, ev gomatrixserverlib.PDU) ([]int64, error) {
	var nids []int64
	for _, t := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev}).Tuples() {
		typeNID, ok, err := r.rs.nids.lookup(tx, r.pending, true, t.EventType)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		keyNID, ok, err := r.rs.nids.lookup(tx, r.pending, false, t.StateKey)
		if err != nil {
			return nil, err
		}
		if nid, in := state[stateKeyNIDs{typeNID, keyNID}]; ok && in {
			nids = append(nids, nid)
		}
	}
	return nids, nil
}

// authEventsOf is an auth event provider holding the events of nids.
// Events that make no valid set (two of one type and state key) are a
// *badAuthEventsError; other errors are storage's.
func (r *room) authEventsOf(tx *storage.Tx, nids []int64) (*gomatrixserverlib.AuthEvents, error) {
	pdus, err := r.pdusByNID(tx, nids)
	if err != nil {
		return nil, err
	}
	list := make([]gomatrixserverlib.PDU, 0, len(pdus))
	for _, p := range pdus {
		list = append(list, p)
	}
	provider, err := gomatrixserverlib.NewAuthEvents(list)
	if err != nil {
		return nil, &badAuthEventsError{err}
	}
	return provider, nil
}

// badAuthEventsError is auth events that make no valid set: the event
// citing them is rejected.
type badAuthEventsError struct{ err error }

func (e *badAuthEventsError) Error() string { return e.err.Error() }

// sameNIDs tells whether two lists hold the same NIDs, ignoring order and
// repeats.
func sameNIDs(a, b []int64) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
