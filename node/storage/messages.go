package storage

import (
	"bytes"
	"database/sql"
	"fmt"
)

// The read side of a /messages page: one query walks the room's stream
// and reads each event's row with it, without the stream rows' state
// changes, which only /sync's timelines need.

// pageEventCols are the event columns a page reads. An event's
// stream_pos is the position of its stream row, so it is not read again.
const pageEventCols = `e.event_nid, e.event_id, e.snapshot_nid, e.redacted, e.json`

// StreamEvents walks a room's events with stream positions after < pos <=
// upto, newest first when desc, calling fn with each row's position and
// event until it returns false (the event's StreamPos is pos; its
// TypeNID and KeyNID are not read). The event and its JSON are only
// valid during the call: they are reused from row to row, so keep copies.
func (ss *SyncSnapshot) StreamEvents(roomNID, after, upto int64, desc bool, fn func(pos int64, e *SyncEvent) bool) error {
	st := stStreamEventsAsc
	if desc {
		st = stStreamEventsDesc
	}
	rows, err := ss.stmt(st).QueryContext(ss.ctx, roomNID, after, upto)
	if err != nil {
		return fmt.Errorf("storage: events of room %d: %w", roomNID, err)
	}
	defer rows.Close()
	var e SyncEvent
	var pos int64
	var js sql.RawBytes
	var buf []byte
	for rows.Next() {
		if err := rows.Scan(&pos, &e.NID, &e.ID, &e.SnapshotNID, &e.Redacted, &js); err != nil {
			return fmt.Errorf("storage: events of room %d: %w", roomNID, err)
		}
		e.StreamPos = pos
		buf, e.JSON = ss.s.db.unpackInto(buf, js)
		if !fn(pos, &e) {
			break
		}
	}
	return rows.Err()
}

// unpackInto is Unpack writing into buf (grown if need be) instead of a
// new slice, for readers that go through many rows and keep none: it
// returns the buffer to reuse and the JSON, which is js itself when
// nothing needed restoring.
func (db *DB) unpackInto(buf, js []byte) (newBuf, out []byte) {
	if db.compact == nil || bytes.IndexByte(js, compactByte) < 0 {
		return buf, js
	}
	buf = buf[:0]
	for {
		i := bytes.IndexByte(js, compactByte)
		if i < 0 {
			break
		}
		buf = append(append(buf, js[:i]...), db.compact...)
		js = js[i+1:]
	}
	buf = append(buf, js...)
	return buf, buf
}
