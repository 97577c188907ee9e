package syncapi

import (
	"context"
	"fmt"
	"slices"

	"hearth/node/clientevent"
	"hearth/node/httputil"
	"hearth/node/storage"
)

// reader is one request's view of the database: a snapshot and the
// helpers that turn its rows into events and state.
type reader struct {
	s    *Syncer
	snap *storage.SyncSnapshot
	// readPos is the snapshot's newest stream position: read with the
	// first query that needs it (see openReader).
	readPos int64
	user    string
	device  string // the transactions table's device key (clientevent.TxnDevice)
	// deviceID is the requesting device's ID.
	deviceID string
	// userKeyNID is the user's state key NID (0: not looked up yet, -1:
	// the user has none), for history visibility.
	userKeyNID int64
	// ignored is the user's ignored users, once read; accountDataPos is
	// the newest position of their account data in this snapshot (-1:
	// not read; 0: they have none), which keys the cache of ignore lists.
	ignored        map[string]bool
	accountDataPos int64
	// joinedRooms are the rooms a sync found the user joined to (nil
	// outside /sync).
	joinedRooms []string
	// keysBegan orders this read against key count invalidations.
	keysBegan uint64
	// lookOnly reads the event cache without adding to it: history
	// paging walks far more events than the cache holds, and would only
	// evict the recent ones every sync needs.
	lookOnly bool
	// walks keeps what the newest-first scans of a sync passed, by room
	// NID, for its unread counts (nil: not kept).
	walks map[int64]*walk
}

// walk is what a newest-first scan of a room's stream passed: every row
// (without its JSON) and its event (nil if unreadable), covering the
// positions (lo, hi]. Like every stream read, it has no rows without an
// event.
type walk struct {
	lo, hi int64
	rows   []storage.StreamRow
	evs    []*event
}

// roomInfo names a room as sync needs it.
type roomInfo struct {
	nid     int64
	id      string
	version string
}

// openReader begins a read without reading its stream position: the
// caller's first query reads it with what else it needs (streamsNow,
// roomAccess), one statement fewer per request.
func (s *Syncer) openReader(ctx context.Context, user, device string) (*reader, error) {
	began := s.keyCounts.begin()
	snap, err := s.store.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return &reader{s: s, snap: snap, user: user, device: clientevent.TxnDevice(user, device), deviceID: device, accountDataPos: -1, keysBegan: began}, nil
}

// newReader begins a read at the newest stream position.
func (s *Syncer) newReader(ctx context.Context, user, device string) (*reader, error) {
	rd, err := s.openReader(ctx, user, device)
	if err != nil {
		return nil, err
	}
	if rd.readPos, err = rd.snap.MaxPos(); err != nil {
		rd.close()
		return nil, fmt.Errorf("syncapi: max stream position: %w", err)
	}
	return rd, nil
}

// historyReader is a reader for a request about history (/messages,
// /context, /event): it reads the event cache without filling it, and
// its position with the room (roomAccess).
func (s *Syncer) historyReader(ctx context.Context, dev *httputil.Device) (*reader, error) {
	rd, err := s.openReader(ctx, dev.UserID, dev.DeviceID)
	if err != nil {
		return nil, err
	}
	rd.lookOnly = true
	return rd, nil
}

func (rd *reader) close() { rd.snap.Close() }

// event turns a stored event into a client event, through the cache. An
// event that cannot be parsed is logged and left out (nil): one bad event
// must not break every sync of the room.
func (rd *reader) event(rm roomInfo, se *storage.SyncEvent) *event {
	if ev := rd.s.cache.get(se.NID); ev != nil && ev.Redacted == se.Redacted {
		return ev
	}
	ev, err := parseEvent(rm.id, se)
	if err != nil {
		rd.s.log.Warn("syncapi: unreadable event", "room", rm.id, "event", se.ID, "err", err)
		return nil
	}
	if !rd.lookOnly {
		rd.s.cache.put(ev, rd.readPos)
	}
	return ev
}

// events loads events by NID (cached ones without a query), in the order
// of nids; unreadable or missing ones are left out.
func (rd *reader) events(rm roomInfo, nids []int64) ([]*event, error) {
	out := make([]*event, len(nids))
	var missing []int64
	for i, nid := range nids {
		if out[i] = rd.s.cache.get(nid); out[i] == nil {
			missing = append(missing, nid)
		}
	}
	if len(missing) > 0 {
		rows, err := rd.snap.EventsByNID(missing)
		if err != nil {
			return nil, fmt.Errorf("syncapi: load events: %w", err)
		}
		byNID := make(map[int64]*event, len(rows))
		for i := range rows {
			if ev := rd.event(rm, &rows[i]); ev != nil {
				byNID[ev.NID] = ev
			}
		}
		for i, nid := range nids {
			if out[i] == nil {
				out[i] = byNID[nid]
			}
		}
	}
	return slices.DeleteFunc(out, func(e *event) bool { return e == nil }), nil
}

// typeNames returns the event types of type NIDs (cached for good: a NID
// never changes meaning).
func (rd *reader) typeNames(nids []int64) (map[int64]string, error) {
	out := make(map[int64]string, len(nids))
	var missing []int64
	rd.s.typeMu.RLock()
	for _, n := range nids {
		if t, ok := rd.s.types[n]; ok {
			out[n] = t
		} else if !slices.Contains(missing, n) {
			missing = append(missing, n)
		}
	}
	rd.s.typeMu.RUnlock()
	if len(missing) == 0 {
		return out, nil
	}
	got, err := rd.snap.TypeNames(missing)
	if err != nil {
		return nil, fmt.Errorf("syncapi: event types: %w", err)
	}
	rd.s.typeMu.Lock()
	for n, t := range got {
		rd.s.types[n] = t
		rd.s.typeNIDs[t] = n
		out[n] = t
	}
	rd.s.typeMu.Unlock()
	return out, nil
}

// typeNIDs returns the NIDs of event types; unknown ones are left out.
// Those known are cached for good: a NID never changes meaning, and one
// a newer snapshot knows matches no event in an older one.
func (rd *reader) typeNIDs(types []string) (map[string]int64, error) {
	out := make(map[string]int64, len(types))
	var missing []string
	rd.s.typeMu.RLock()
	for _, t := range types {
		if n, ok := rd.s.typeNIDs[t]; ok {
			out[t] = n
		} else {
			missing = append(missing, t)
		}
	}
	rd.s.typeMu.RUnlock()
	if len(missing) == 0 {
		return out, nil
	}
	got, err := rd.snap.TypeNIDs(missing)
	if err != nil {
		return nil, fmt.Errorf("syncapi: event type NIDs: %w", err)
	}
	rd.s.typeMu.Lock()
	for n, t := range got {
		rd.s.types[n] = t
		rd.s.typeNIDs[t] = n
		out[t] = n
	}
	rd.s.typeMu.Unlock()
	return out, nil
}

// memberType returns the NID of m.room.member.
func (rd *reader) memberType() (int64, error) {
	if n := rd.s.memberNID.Load(); n != 0 {
		return n, nil
	}
	m, err := rd.typeNIDs([]string{"m.room.member"})
	if err != nil {
		return 0, err
	}
	rd.s.memberNID.Store(m["m.room.member"])
	return m["m.room.member"], nil
}

// withTxnIDs returns the events' JSON, with transaction_id added to those
// this request's device sent.
func (rd *reader) withTxnIDs(rm roomInfo, evs []*event) ([][]byte, error) {
	out := make([][]byte, len(evs))
	var own []int64
	for i, ev := range evs {
		out[i] = ev.JSON
		if ev.Sender == rd.user {
			own = append(own, ev.NID)
		}
	}
	if len(own) == 0 {
		return out, nil
	}
	txns, err := rd.snap.TxnIDs(rd.device, rm.nid, own)
	if err != nil {
		return nil, fmt.Errorf("syncapi: transaction IDs: %w", err)
	}
	if len(txns) == 0 {
		return out, nil
	}
	for i, ev := range evs {
		if t, ok := txns[ev.NID]; ok {
			out[i] = ev.withTxnID(t)
		}
	}
	return out, nil
}

// scan walks a room's stream between two positions (after < pos <=
// upto), newest first when desc, collecting up to limit events the filter
// allows (f may be nil). It returns every row it passed (the window, in
// walk order, which the caller rewinds state over; their JSON is not
// kept), the events, and whether rows beyond the window remain in range.
// It reads at most maxScan rows so a filter that matches nothing cannot
// make one request read a room's whole history. It is one query: the
// index walk stops as soon as it has enough.
func (rd *reader) scan(rm roomInfo, after, upto int64, desc bool, limit int, f *RoomEventFilter) (window []storage.StreamRow, evs []*event, more bool, err error) {
	if after >= upto {
		return nil, nil, false, nil
	}
	filtered := f != nil && f.selective()
	window = make([]storage.StreamRow, 0, min(limit+1, 128))
	keep := desc && rd.walks != nil
	var all []*event
	err = rd.snap.StreamEach(rm.nid, after, upto, desc, func(r *storage.StreamRow) bool {
		if len(evs) == limit || len(window) >= maxScan {
			more = true
			return false
		}
		ev := rd.event(rm, &r.Event)
		row := *r
		row.Event.JSON = nil
		window = append(window, row)
		if keep {
			all = append(all, ev)
		}
		if ev != nil && (!filtered || f.allowsEvent(ev)) {
			evs = append(evs, ev)
		}
		return true
	})
	if err != nil {
		return nil, nil, false, err
	}
	if keep {
		w := &walk{lo: after, hi: upto, rows: window, evs: all}
		if more { // it saw the rows from its last one up
			w.lo = upto
			if len(window) > 0 {
				w.lo = window[len(window)-1].Pos - 1
			}
		}
		rd.walks[rm.nid] = w
	}
	return window, evs, more, nil
}

// maxScan bounds the stream rows one filtered scan reads.
const maxScan = 2000
