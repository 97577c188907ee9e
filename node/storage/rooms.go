package storage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// The roomserver's tables. String IDs map to numeric IDs (NIDs) that never
// leave the node; 0 means "none". The state at every event is a snapshot: a
// list of up to 64 state blocks, each a sorted run of (type NID, state key
// NID, event NID) entries, shared between snapshots.
var roomsMigrations = []string{
	`CREATE TABLE event_types (
		type_nid INTEGER PRIMARY KEY,
		type TEXT NOT NULL UNIQUE
	);
	INSERT INTO event_types (type_nid, type) VALUES
		(1, 'm.room.create'), (2, 'm.room.power_levels'), (3, 'm.room.join_rules'),
		(4, 'm.room.third_party_invite'), (5, 'm.room.member'), (6, 'm.room.redaction'),
		(7, 'm.room.history_visibility'), (8, 'm.room.name'), (9, 'm.room.topic'),
		(10, 'm.room.canonical_alias'), (11, 'm.room.guest_access'), (12, 'm.room.avatar'),
		(13, 'm.room.encryption'), (14, 'm.room.server_acl'), (15, 'm.room.message');
	CREATE TABLE state_keys (
		key_nid INTEGER PRIMARY KEY,
		state_key TEXT NOT NULL UNIQUE
	);
	INSERT INTO state_keys (key_nid, state_key) VALUES (1, '');
	CREATE TABLE rooms (
		room_nid INTEGER PRIMARY KEY,
		room_id TEXT NOT NULL UNIQUE,
		version TEXT NOT NULL,
		-- the current (resolved) state
		snapshot_nid INTEGER NOT NULL DEFAULT 0,
		-- forward extremities: event NIDs, packed
		extremities BLOB NOT NULL DEFAULT x'',
		depth INTEGER NOT NULL DEFAULT 0
	);
	CREATE TABLE events (
		event_nid INTEGER PRIMARY KEY,
		room_nid INTEGER NOT NULL,
		event_id TEXT NOT NULL UNIQUE,
		type_nid INTEGER NOT NULL,
		key_nid INTEGER NOT NULL,          -- 0: not a state event
		depth INTEGER NOT NULL,
		snapshot_nid INTEGER NOT NULL,     -- state before the event; 0: outlier
		rejected INTEGER NOT NULL DEFAULT 0,
		stream_pos INTEGER NOT NULL DEFAULT 0, -- 0: not in the stream
		redacted INTEGER NOT NULL DEFAULT 0,
		json BLOB NOT NULL
	);
	CREATE INDEX events_room_depth ON events (room_nid, depth);
	CREATE TABLE state_blocks (
		block_nid INTEGER PRIMARY KEY,
		entries BLOB NOT NULL
	);
	CREATE TABLE state_snapshots (
		snapshot_nid INTEGER PRIMARY KEY,
		room_nid INTEGER NOT NULL,
		blocks BLOB NOT NULL
	);
	-- the output stream: one row per event that entered the room's timeline
	CREATE TABLE stream (
		pos INTEGER PRIMARY KEY AUTOINCREMENT,
		room_nid INTEGER NOT NULL,
		event_nid INTEGER NOT NULL,
		adds BLOB NOT NULL,
		removes BLOB NOT NULL
	);
	CREATE INDEX stream_room ON stream (room_nid, pos);
	-- current state, one row per (room, type, state key): what /sync and
	-- the client API read without decoding snapshots
	CREATE TABLE current_state (
		room_nid INTEGER NOT NULL,
		type_nid INTEGER NOT NULL,
		key_nid INTEGER NOT NULL,
		event_nid INTEGER NOT NULL,
		PRIMARY KEY (room_nid, type_nid, key_nid)
	) WITHOUT ROWID;
	-- current membership, with the stream position it last changed at
	CREATE TABLE memberships (
		user_id TEXT NOT NULL,
		room_nid INTEGER NOT NULL,
		membership TEXT NOT NULL,
		event_nid INTEGER NOT NULL,
		pos INTEGER NOT NULL,
		PRIMARY KEY (user_id, room_nid)
	) WITHOUT ROWID;
	CREATE INDEX memberships_room ON memberships (room_nid, membership);
	-- idempotent client sends: (device, room, txn) → event
	CREATE TABLE transactions (
		device TEXT NOT NULL,
		room_nid INTEGER NOT NULL,
		txn_id TEXT NOT NULL,
		event_nid INTEGER NOT NULL,
		PRIMARY KEY (device, room_nid, txn_id)
	) WITHOUT ROWID;
	-- the durable input log for events from other servers
	CREATE TABLE input_log (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		room_id TEXT NOT NULL,
		version TEXT NOT NULL,
		outlier INTEGER NOT NULL,
		backfilled INTEGER NOT NULL,
		state_before TEXT,              -- JSON list of event IDs, or NULL
		json BLOB NOT NULL
	);`,
	// Only stream rows that change state: working out the state at a
	// timeline's start then costs what changed, not every message since.
	`CREATE INDEX stream_state ON stream (room_nid, pos) WHERE adds != x'' OR removes != x'';`,
	// Devices as a 64-bit hash of "user|device": a sixth of the size.
	`DROP TABLE transactions;
	CREATE TABLE transactions (
		device INTEGER NOT NULL,
		room_nid INTEGER NOT NULL,
		txn_id TEXT NOT NULL,
		event_nid INTEGER NOT NULL,
		PRIMARY KEY (device, room_nid, txn_id)
	) WITHOUT ROWID;`,
}

// MigrateRooms creates or updates the roomserver's tables.
func (db *DB) MigrateRooms() error { return db.Migrate("rooms", roomsMigrations) }

// ErrNotFound is returned when a row looked up does not exist.
var ErrNotFound = errors.New("storage: not found")

func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// PackNIDs encodes NIDs as varints: compact, and a BLOB needs no parsing
// beyond this.
func PackNIDs(nids []int64) []byte {
	b := make([]byte, 0, len(nids)*3)
	for _, n := range nids {
		b = binary.AppendVarint(b, n)
	}
	return b
}

// UnpackNIDs decodes PackNIDs.
func UnpackNIDs(b []byte) ([]int64, error) {
	var out []int64
	for len(b) > 0 {
		n, k := binary.Varint(b)
		if k <= 0 {
			return nil, errors.New("storage: corrupt NID list")
		}
		out = append(out, n)
		b = b[k:]
	}
	return out, nil
}

// NIDs assigns numeric IDs to strings in one of the two ID tables.
func nidFor(tx *Tx, table, idCol, valCol, val string) (int64, error) {
	var nid int64 // idCol is the table's INTEGER PRIMARY KEY
	err := tx.QueryRow(`SELECT `+idCol+` FROM `+table+` WHERE `+valCol+` = ?`, val).Scan(&nid)
	if err == nil {
		return nid, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	return tx.Insert(`INSERT INTO `+table+` (`+valCol+`) VALUES (?)`, val)
}

// LookupNID finds the NID of an event type or a state key without
// assigning one, or ErrNotFound.
func LookupNID(tx *Tx, isType bool, s string) (int64, error) {
	q := `SELECT key_nid FROM state_keys WHERE state_key = ?`
	if isType {
		q = `SELECT type_nid FROM event_types WHERE type = ?`
	}
	var nid int64
	err := tx.QueryRow(q, s).Scan(&nid)
	return nid, notFound(err)
}

// TypeNID returns the NID of an event type, assigning one if new.
func TypeNID(tx *Tx, eventType string) (int64, error) {
	return nidFor(tx, "event_types", "type_nid", "type", eventType)
}

// KeyNID returns the NID of a state key, assigning one if new.
func KeyNID(tx *Tx, stateKey string) (int64, error) {
	return nidFor(tx, "state_keys", "key_nid", "state_key", stateKey)
}

// Room is a room's row.
type Room struct {
	NID         int64
	ID          string
	Version     string
	SnapshotNID int64
	Extremities []int64
	Depth       int64
}

// RoomByID loads a room, or ErrNotFound.
func (db *DB) RoomByID(ctx context.Context, roomID string) (*Room, error) {
	r := &Room{ID: roomID}
	var ext []byte
	err := db.QueryRow(ctx, `SELECT room_nid, version, snapshot_nid, extremities, depth FROM rooms WHERE room_id = ?`, roomID).
		Scan(&r.NID, &r.Version, &r.SnapshotNID, &ext, &r.Depth)
	if err != nil {
		return nil, notFound(err)
	}
	if r.Extremities, err = UnpackNIDs(ext); err != nil {
		return nil, err
	}
	return r, nil
}

// RoomIDOf returns the ID of a room by NID.
func (db *DB) RoomIDOf(ctx context.Context, roomNID int64) (string, error) {
	var id string
	err := db.QueryRow(ctx, `SELECT room_id FROM rooms WHERE room_nid = ?`, roomNID).Scan(&id)
	return id, notFound(err)
}

// InsertRoom adds a room and returns its NID.
func InsertRoom(tx *Tx, roomID, version string) (int64, error) {
	nid, err := tx.Insert(`INSERT INTO rooms (room_id, version) VALUES (?, ?)`, roomID, version)
	if err != nil {
		return 0, fmt.Errorf("insert room %s: %w", roomID, err)
	}
	return nid, nil
}

// UpdateRoom records a room's current state, extremities and depth.
func UpdateRoom(tx *Tx, r *Room) error {
	_, err := tx.Exec(`UPDATE rooms SET snapshot_nid = ?, extremities = ?, depth = ? WHERE room_nid = ?`,
		r.SnapshotNID, PackNIDs(r.Extremities), r.Depth, r.NID)
	return err
}

// Event is an event's row.
type Event struct {
	NID         int64
	RoomNID     int64
	ID          string
	TypeNID     int64
	KeyNID      int64
	Depth       int64
	SnapshotNID int64
	Rejected    bool
	StreamPos   int64
	Redacted    bool
	JSON        []byte
}

const eventCols = `event_nid, room_nid, event_id, type_nid, key_nid, depth, snapshot_nid, rejected, stream_pos, redacted, json`

type scanner interface{ Scan(...any) error }

// scanEvents reads every row of a query for events.
func (db *DB) scanEvents(rows *sql.Rows, err error) ([]*Event, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		e, err := db.scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func (db *DB) scanEvent(s scanner) (*Event, error) {
	e := &Event{}
	err := s.Scan(&e.NID, &e.RoomNID, &e.ID, &e.TypeNID, &e.KeyNID, &e.Depth, &e.SnapshotNID, &e.Rejected, &e.StreamPos, &e.Redacted, &e.JSON)
	e.JSON = db.Unpack(e.JSON)
	return e, notFound(err)
}

// InsertEvent stores an event and returns its NID.
func InsertEvent(tx *Tx, e *Event) (int64, error) {
	var err error
	e.NID, err = tx.Insert(`INSERT INTO events (room_nid, event_id, type_nid, key_nid, depth, snapshot_nid, rejected, stream_pos, redacted, json)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.RoomNID, e.ID, e.TypeNID, e.KeyNID, e.Depth, e.SnapshotNID, e.Rejected, e.StreamPos, e.Redacted, tx.db.pack(e.JSON))
	if err != nil {
		return 0, fmt.Errorf("insert event %s: %w", e.ID, err)
	}
	if tx.firstEvent == 0 {
		tx.firstEvent = e.NID
	}
	tx.lastEvent = e.NID
	return e.NID, nil
}

// SetStreamPos records where an event entered the stream.
func SetStreamPos(tx *Tx, eventNID, pos int64) error {
	_, err := tx.Exec(`UPDATE events SET stream_pos = ? WHERE event_nid = ?`, pos, eventNID)
	return err
}

// RedactEvent replaces an event's JSON with its redacted form.
func RedactEvent(tx *Tx, eventNID int64, redactedJSON []byte) error {
	_, err := tx.Exec(`UPDATE events SET json = ?, redacted = 1 WHERE event_nid = ?`, tx.db.pack(redactedJSON), eventNID)
	return err
}

// EventByID loads an event by ID, or ErrNotFound.
func (db *DB) EventByID(ctx context.Context, eventID string) (*Event, error) {
	return db.scanEvent(db.QueryRow(ctx, `SELECT `+eventCols+` FROM events WHERE event_id = ?`, eventID))
}

// EventByIDTx is EventByID inside a write.
func EventByIDTx(tx *Tx, eventID string) (*Event, error) {
	return tx.db.scanEvent(tx.QueryRow(`SELECT `+eventCols+` FROM events WHERE event_id = ?`, eventID))
}

// EventMetaByIDTx loads an event's row without its JSON (which stays
// nil), inside a write, or ErrNotFound.
func EventMetaByIDTx(tx *Tx, eventID string) (*Event, error) {
	e := &Event{ID: eventID}
	err := tx.QueryRow(`SELECT event_nid, room_nid, type_nid, key_nid, depth, snapshot_nid, rejected, stream_pos, redacted
		FROM events WHERE event_id = ?`, eventID).
		Scan(&e.NID, &e.RoomNID, &e.TypeNID, &e.KeyNID, &e.Depth, &e.SnapshotNID, &e.Rejected, &e.StreamPos, &e.Redacted)
	return e, notFound(err)
}

// EventMetasByIDTx loads the rows (without JSON) of the events with the
// given IDs that are stored, inside a write. One ID takes a point query:
// the json_each one costs several times as much (a live message leaves
// one ID to look up, see the roomserver's remembered rows).
func EventMetasByIDTx(tx *Tx, ids []string) ([]*Event, error) {
	switch len(ids) {
	case 0:
		return nil, nil
	case 1:
		e, err := EventMetaByIDTx(tx, ids[0])
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []*Event{e}, nil
	}
	rows, err := tx.Query(`SELECT event_id, event_nid, room_nid, type_nid, key_nid, depth, snapshot_nid, rejected, stream_pos, redacted
		FROM events WHERE event_id IN (SELECT value FROM json_each(?))`, jsonStrings(ids))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		e := &Event{}
		if err := rows.Scan(&e.ID, &e.NID, &e.RoomNID, &e.TypeNID, &e.KeyNID, &e.Depth, &e.SnapshotNID, &e.Rejected, &e.StreamPos, &e.Redacted); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// EventsByNID loads events by NID, in no particular order; missing NIDs
// are skipped.
func (db *DB) EventsByNID(ctx context.Context, nids []int64) ([]*Event, error) {
	return db.eventsByNID(nids, func(q string, args ...any) (*sql.Rows, error) { return db.Query(ctx, q, args...) })
}

// EventsByNIDTx is EventsByNID inside a write.
func EventsByNIDTx(tx *Tx, nids []int64) ([]*Event, error) {
	return tx.db.eventsByNID(nids, tx.Query)
}

func (db *DB) eventsByNID(nids []int64, query func(string, ...any) (*sql.Rows, error)) ([]*Event, error) {
	if len(nids) == 0 {
		return nil, nil
	}
	// json_each over a list keeps this one prepared statement for any count.
	return db.scanEvents(query(`SELECT `+eventCols+` FROM events WHERE event_nid IN (SELECT value FROM json_each(?))`, jsonInts(nids)))
}

func jsonInts(nids []int64) string {
	b := make([]byte, 0, len(nids)*6+2)
	b = append(b, '[')
	for i, n := range nids {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, "%d", n)
	}
	return string(append(b, ']'))
}

// StateEntry is one (type, state key) → event mapping.
type StateEntry struct {
	TypeNID, KeyNID, EventNID int64
}

// InsertStateBlock stores a block of entries and returns its NID.
func InsertStateBlock(tx *Tx, entries []StateEntry) (int64, error) {
	nids := make([]int64, 0, len(entries)*3)
	for _, e := range entries {
		nids = append(nids, e.TypeNID, e.KeyNID, e.EventNID)
	}
	return tx.Insert(`INSERT INTO state_blocks (entries) VALUES (?)`, PackNIDs(nids))
}

// InsertSnapshot stores a snapshot (a list of block NIDs) for a room.
func InsertSnapshot(tx *Tx, roomNID int64, blocks []int64) (int64, error) {
	return tx.Insert(`INSERT INTO state_snapshots (room_nid, blocks) VALUES (?, ?)`, roomNID, PackNIDs(blocks))
}

// SnapshotBlocks returns the block NIDs of a snapshot.
func (db *DB) SnapshotBlocks(ctx context.Context, snapshotNID int64) ([]int64, error) {
	var b []byte
	if err := db.QueryRow(ctx, `SELECT blocks FROM state_snapshots WHERE snapshot_nid = ?`, snapshotNID).Scan(&b); err != nil {
		return nil, notFound(err)
	}
	return UnpackNIDs(b)
}

// StateBlock returns the entries of a block.
func (db *DB) StateBlock(ctx context.Context, blockNID int64) ([]StateEntry, error) {
	var b []byte
	if err := db.QueryRow(ctx, `SELECT entries FROM state_blocks WHERE block_nid = ?`, blockNID).Scan(&b); err != nil {
		return nil, notFound(err)
	}
	return decodeBlock(blockNID, b)
}

// NextStreamPos hands out the stream position after every one in use,
// for an event whose row is written before its stream row (which
// AppendStreamAt then writes there): the event's row carries it from the
// start instead of being updated once the stream row has it. Writes that
// commit never share a position; one undone under a savepoint (see
// commit) leaves a gap.
func NextStreamPos(tx *Tx) (int64, error) {
	if tx.streamPos == 0 {
		err := tx.QueryRow(`SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'stream'), 0)`).Scan(&tx.streamPos)
		if err != nil {
			return 0, fmt.Errorf("next stream position: %w", err)
		}
	}
	tx.streamPos++
	return tx.streamPos, nil
}

// AppendStream adds an event (or, with eventNID 0, a change of state
// alone) to the output stream and returns its position.
func AppendStream(tx *Tx, roomNID, eventNID int64, adds, removes []int64) (int64, error) {
	pos, err := NextStreamPos(tx)
	if err != nil {
		return 0, err
	}
	return pos, AppendStreamAt(tx, pos, roomNID, eventNID, adds, removes)
}

// AppendStreamAt adds an event to the output stream at a position from
// NextStreamPos.
func AppendStreamAt(tx *Tx, pos, roomNID, eventNID int64, adds, removes []int64) error {
	_, err := tx.Exec(`INSERT INTO stream (pos, room_nid, event_nid, adds, removes) VALUES (?, ?, ?, ?, ?)`,
		pos, roomNID, eventNID, PackNIDs(adds), PackNIDs(removes))
	return err
}

// SetCurrentState applies a state delta to a room's current state.
func SetCurrentState(tx *Tx, roomNID int64, set []StateEntry, del []StateEntry) error {
	for _, e := range del {
		if _, err := tx.Exec(`DELETE FROM current_state WHERE room_nid = ? AND type_nid = ? AND key_nid = ?`, roomNID, e.TypeNID, e.KeyNID); err != nil {
			return err
		}
	}
	for _, e := range set {
		if _, err := tx.Exec(`INSERT INTO current_state (room_nid, type_nid, key_nid, event_nid) VALUES (?, ?, ?, ?)
			ON CONFLICT DO UPDATE SET event_nid = excluded.event_nid`, roomNID, e.TypeNID, e.KeyNID, e.EventNID); err != nil {
			return err
		}
	}
	return nil
}

// SetMembership records a user's current membership of a room.
func SetMembership(tx *Tx, userID string, roomNID int64, membership string, eventNID, pos int64) error {
	_, err := tx.Exec(`INSERT INTO memberships (user_id, room_nid, membership, event_nid, pos) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid, pos = excluded.pos`,
		userID, roomNID, membership, eventNID, pos)
	return err
}

// TxnEvent returns the event a client transaction produced, or ErrNotFound.
func TxnEvent(tx *Tx, device string, roomNID int64, txnID string) (string, error) {
	var id string
	err := tx.QueryRow(txnEventQuery, deviceHash(device), roomNID, txnID).Scan(&id)
	return id, notFound(err)
}

// TxnEventCommitted is TxnEvent outside a write: it sees committed
// transactions only.
func (db *DB) TxnEventCommitted(ctx context.Context, device string, roomNID int64, txnID string) (string, error) {
	var id string
	err := db.QueryRow(ctx, txnEventQuery, deviceHash(device), roomNID, txnID).Scan(&id)
	return id, notFound(err)
}

const txnEventQuery = `SELECT e.event_id FROM transactions t JOIN events e ON e.event_nid = t.event_nid
	WHERE t.device = ? AND t.room_nid = ? AND t.txn_id = ?`

// InsertTxn records the event a client transaction produced.
func InsertTxn(tx *Tx, device string, roomNID int64, txnID string, eventNID int64) error {
	dev := deviceHash(device)
	if _, err := tx.Exec(`INSERT INTO transactions (device, room_nid, txn_id, event_nid) VALUES (?, ?, ?, ?)`, dev, roomNID, txnID, eventNID); err != nil {
		return err
	}
	// A copy: txnID may share memory with the whole request.
	tx.txns = append(tx.txns, txnNote{eventNID, recentTxn{dev, strings.Clone(txnID)}})
	return nil
}

// deviceHash keys a device by 64 bits of SHA-256: collisions between the
// devices of one node are out of reach.
func deviceHash(device string) int64 {
	h := sha256.Sum256([]byte(device))
	return int64(binary.BigEndian.Uint64(h[:8]))
}

// CurrentState returns a room's current state events.
func (db *DB) CurrentState(ctx context.Context, roomNID int64) ([]*Event, error) {
	return db.scanEvents(db.Query(ctx, `SELECT `+prefixed("e.", eventCols)+` FROM current_state c
		JOIN events e ON e.event_nid = c.event_nid WHERE c.room_nid = ?`, roomNID))
}

// CurrentStateEvent returns one current state event, or ErrNotFound.
func (db *DB) CurrentStateEvent(ctx context.Context, roomNID int64, eventType, stateKey string) (*Event, error) {
	return db.scanEvent(db.QueryRow(ctx, `SELECT `+prefixed("e.", eventCols)+` FROM current_state c
		JOIN event_types t ON t.type_nid = c.type_nid
		JOIN state_keys k ON k.key_nid = c.key_nid
		JOIN events e ON e.event_nid = c.event_nid
		WHERE c.room_nid = ? AND t.type = ? AND k.state_key = ?`, roomNID, eventType, stateKey))
}

// Membership returns a user's current membership of a room, or ErrNotFound.
func (db *DB) Membership(ctx context.Context, userID string, roomNID int64) (string, error) {
	var m string
	err := db.QueryRow(ctx, `SELECT membership FROM memberships WHERE user_id = ? AND room_nid = ?`, userID, roomNID).Scan(&m)
	return m, notFound(err)
}

// RoomsWithMembership lists the IDs of the rooms where a user's current
// membership is m.
func (db *DB) RoomsWithMembership(ctx context.Context, userID, membership string) ([]string, error) {
	out, err := scanStrings(db.Query(ctx, `SELECT r.room_id FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.user_id = ? AND m.membership = ?`, userID, membership))
	if out == nil && err == nil {
		out = []string{} // an empty list, never null, in answers
	}
	return out, err
}

// RoomVersionOf returns the version of a room by NID.
func (db *DB) RoomVersionOf(ctx context.Context, roomNID int64) (string, error) {
	var v string
	err := db.QueryRow(ctx, `SELECT version FROM rooms WHERE room_nid = ?`, roomNID).Scan(&v)
	return v, notFound(err)
}

func prefixed(p, cols string) string {
	return p + strings.ReplaceAll(cols, ", ", ", "+p)
}

// SnapshotBlocksTx is SnapshotBlocks inside a write.
func SnapshotBlocksTx(tx *Tx, snapshotNID int64) ([]int64, error) {
	var b []byte
	if err := tx.QueryRow(`SELECT blocks FROM state_snapshots WHERE snapshot_nid = ?`, snapshotNID).Scan(&b); err != nil {
		return nil, notFound(err)
	}
	return UnpackNIDs(b)
}

// StateBlockTx is StateBlock inside a write.
func StateBlockTx(tx *Tx, blockNID int64) ([]StateEntry, error) {
	var b []byte
	if err := tx.QueryRow(`SELECT entries FROM state_blocks WHERE block_nid = ?`, blockNID).Scan(&b); err != nil {
		return nil, notFound(err)
	}
	return decodeBlock(blockNID, b)
}

func decodeBlock(blockNID int64, b []byte) ([]StateEntry, error) {
	nids, err := UnpackNIDs(b)
	if err != nil || len(nids)%3 != 0 {
		return nil, fmt.Errorf("storage: corrupt state block %d", blockNID)
	}
	out := make([]StateEntry, len(nids)/3)
	for i := range out {
		out[i] = StateEntry{nids[3*i], nids[3*i+1], nids[3*i+2]}
	}
	return out, nil
}

// RoomNIDTx returns a room's NID inside a write, or ErrNotFound.
func RoomNIDTx(tx *Tx, roomID string) (int64, error) {
	var nid int64
	err := tx.QueryRow(`SELECT room_nid FROM rooms WHERE room_id = ?`, roomID).Scan(&nid)
	return nid, notFound(err)
}

// LoggedInput is an event waiting in the durable input log.
type LoggedInput struct {
	Seq         int64
	RoomID      string
	Version     string
	Outlier     bool
	Backfilled  bool
	StateBefore []string
	JSON        []byte
}

// AppendInputLog adds an event from another server to the input log.
func AppendInputLog(tx *Tx, l LoggedInput) (int64, error) {
	var stateBefore []byte
	if l.StateBefore != nil {
		stateBefore, _ = json.Marshal(l.StateBefore)
	}
	return tx.Insert(`INSERT INTO input_log (room_id, version, outlier, backfilled, state_before, json) VALUES (?, ?, ?, ?, ?, ?)`,
		l.RoomID, l.Version, l.Outlier, l.Backfilled, stateBefore, l.JSON)
}

// DeleteInputLog removes a processed event from the input log.
func DeleteInputLog(tx *Tx, seq int64) error {
	_, err := tx.Exec(`DELETE FROM input_log WHERE seq = ?`, seq)
	return err
}

// InputLog returns every event still in the input log, oldest first.
func (db *DB) InputLog(ctx context.Context) ([]LoggedInput, error) {
	rows, err := db.Query(ctx, `SELECT seq, room_id, version, outlier, backfilled, state_before, json FROM input_log ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []LoggedInput
	for rows.Next() {
		var l LoggedInput
		var stateBefore []byte
		if err := rows.Scan(&l.Seq, &l.RoomID, &l.Version, &l.Outlier, &l.Backfilled, &stateBefore, &l.JSON); err != nil {
			return nil, err
		}
		if len(stateBefore) > 0 { // NULL: no state given
			if err := json.Unmarshal(stateBefore, &l.StateBefore); err != nil {
				return nil, fmt.Errorf("storage: input log %d: %w", l.Seq, err)
			}
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// SetSnapshot records the state before an event taken up from an outlier.
func SetSnapshot(tx *Tx, eventNID, snapshotNID int64) error {
	_, err := tx.Exec(`UPDATE events SET snapshot_nid = ? WHERE event_nid = ?`, snapshotNID, eventNID)
	return err
}

// LowestStreamPos is the lowest stream position in use (backfilled
// history has negative ones), or 0.
func LowestStreamPos(tx *Tx) (int64, error) {
	var pos int64
	err := tx.QueryRow(`SELECT COALESCE(MIN(pos), 0) FROM stream`).Scan(&pos)
	return pos, err
}

// HistoryRow is an event at a chosen stream position: backfilled
// history, below the stream, changing no state.
type HistoryRow struct{ Pos, EventNID int64 }

// historyChunk is how many history rows one INSERT writes. In wasm a
// statement costs about as much again as the row it inserts.
const historyChunk = 32

// InsertHistory adds a room's backfilled events to the stream, in
// statements of up to historyChunk rows.
func InsertHistory(tx *Tx, roomNID int64, rows []HistoryRow) error {
	args := make([]any, 0, 3*historyChunk)
	for len(rows) > 0 {
		n := min(len(rows), historyChunk)
		args = args[:0]
		for _, r := range rows[:n] {
			args = append(args, r.Pos, roomNID, r.EventNID)
		}
		q := "INSERT INTO stream (pos, room_nid, event_nid, adds, removes) VALUES (?, ?, ?, x'', x'')" +
			strings.Repeat(", (?, ?, ?, x'', x'')", n-1)
		if _, err := tx.Exec(q, args...); err != nil {
			return fmt.Errorf("insert history at %d: %w", rows[0].Pos, err)
		}
		rows = rows[n:]
	}
	return nil
}

// OldestTimelineEvents returns a room's oldest events in its timeline (by
// stream position, which backfill keeps in topological order).
func (db *DB) OldestTimelineEvents(ctx context.Context, roomNID int64) ([]*Event, error) {
	return db.scanEvents(db.Query(ctx, `SELECT `+prefixed("e.", eventCols)+` FROM stream s
		JOIN events e ON e.event_nid = s.event_nid WHERE s.room_nid = ? ORDER BY s.pos LIMIT 20`, roomNID))
}

// Have reports which of the event IDs are stored (as anything but
// rejected) and which of those are in their room's timeline.
func (db *DB) Have(ctx context.Context, ids []string) (stored, inTimeline map[string]bool, err error) {
	stored, inTimeline = map[string]bool{}, map[string]bool{}
	if len(ids) == 0 {
		return stored, inTimeline, nil
	}
	rows, err := db.Query(ctx, `SELECT event_id, stream_pos != 0 FROM events WHERE rejected = 0
		AND event_id IN (SELECT value FROM json_each(?))`, jsonStrings(ids))
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var tl bool
		if err := rows.Scan(&id, &tl); err != nil {
			return nil, nil, err
		}
		stored[id], inTimeline[id] = true, tl
	}
	return stored, inTimeline, rows.Err()
}
