package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
)

// Sync's read side. Sync only reads the roomserver's tables (stream,
// events, current_state, memberships, state blocks and snapshots, the ID
// tables) and the user data tables; it never writes them. Every /sync,
// /messages or /context request reads inside one SyncSnapshot: a read
// transaction, so the stream's newest position, the current state and the
// memberships it sees all belong to the same commit. Queries are prepared
// once and reused on every connection.
//
// Sync-only tables (receipts, to-device messages, device-list changes)
// have their own migration component, "sync": see ephemeral.go.

// SyncStore holds sync's prepared read queries.
type SyncStore struct {
	db    *DB
	stmts [numSyncStmts]*sql.Stmt
}

type syncStmt int

const (
	stMaxPos syncStmt = iota
	stMaxAccountDataPos
	stAccountDataSince
	stUserRooms
	stUserRoomsSync
	stChangedRoomsNear
	stChangedRoomsTail
	stChangedRoomsSeek
	stMembershipByID
	stRoomAccess
	stStreamDesc
	stStreamAsc
	stStreamEventsDesc
	stStreamEventsAsc
	stStreamRow
	stStateChanges
	stCurrentState
	stCurrentStateOf
	stCurrentStateTypes
	stCurrentStateKeys
	stCurrentStateExcept
	stEventsByNID
	stEventKeys
	stEventByID
	stTypeNames
	stTypeNIDs
	stKeyNIDs
	stSnapshot
	stBlocks
	stTxnIDs
	stPositions
	stKeyCounts
	stReceiptsOfRooms
	stReceiptsTail
	stOwnReadPos
	stToDevice
	stDeviceListsSince
	stSharing
	stRoomJoined
	stGlobalAccountData
	stMemberCounts
	stHeroes
	numSyncStmts
)

// The columns of a UserRoom (memberships m joined to rooms r) but its
// sync columns.
const userRoomCols = `m.room_nid, r.room_id, r.version, m.membership, m.event_nid, m.pos,
	COALESCE((SELECT MAX(s.pos) FROM stream s WHERE s.room_nid = m.room_nid), 0)`

// syncRoomCols are a UserRoom's sync columns, a seek each per room; read
// with the rooms, they save a sync a query each per room. The read
// position is what stOwnReadPos reads; the newest state change is a seek
// on the partial index stream_state.
const syncRoomCols = `(SELECT COALESCE(MAX(rc.event_pos), 0) FROM receipts rc
		WHERE rc.room_id = r.room_id AND rc.user_id = m.user_id AND ` + mainReadReceipt + `),
	COALESCE((SELECT MAX(s.pos) FROM stream s
		WHERE s.room_nid = m.room_nid AND (s.adds != x'' OR s.removes != x'')), 0)`

// mainReadReceipt picks, among a user's receipts in a room (rc, found
// by a primary key prefix seek), the main timeline's read receipts. The
// unary + keeps the lists from driving the index: as index keys SQLite
// builds a temporary table of them at every execution (felt in the
// browser); as filters they are two comparisons.
const mainReadReceipt = `+rc.type IN ('m.read', 'm.read.private') AND +rc.thread_id IN ('', 'main')`

// Columns of an event joined to a stream row; kept in one place so the
// scanners and the queries agree.
const syncEventCols = `e.event_nid, e.event_id, e.type_nid, e.key_nid, e.snapshot_nid, e.stream_pos, e.redacted, e.json`

// No query binds its LIMIT: with this SQLite build (STAT4) a bound LIMIT
// expires the prepared statement at every execution, so it is re-parsed
// each time. The scans walk an index in order, and the Go side stops
// reading once it has enough rows.
var syncQueries = [numSyncStmts]string{
	stMaxPos:            `SELECT COALESCE(MAX(pos), 0) FROM stream`,
	stMaxAccountDataPos: `SELECT COALESCE(MAX(pos), 0) FROM account_data WHERE user_id = ?`,
	stAccountDataSince: `SELECT room_id, type, content, pos FROM account_data
		WHERE user_id = ? AND pos > ? AND pos <= ? ORDER BY pos`,
	// One statement for the whole room list: each room's newest stream
	// position is an index seek on stream_room, so an incremental sync
	// finds its changed rooms without a query per room.
	stUserRooms: `SELECT ` + userRoomCols + `, NULL, NULL
		FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid WHERE m.user_id = ?1`,
	// The same with the sync columns.
	stUserRoomsSync: `SELECT ` + userRoomCols + `, ` + syncRoomCols + `
		FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid WHERE m.user_id = ?1`,
	// The user's rooms with news after a position: found from the stream's
	// tail when the gap is short (one range scan, no per-room seek), or by
	// one seek per room when it is long, so neither a busy server nor an
	// old token makes it slow. When the gap is a few positions (a
	// long-poll's), the tail's rows drive instead: each room's newest row
	// (a seek on stream_room tells) is looked up in the user's
	// memberships, so no temporary table is built for the tail's rooms,
	// and the row's position is the room's newest. A membership change is
	// a stream row of its room (the member event's row, whose position the
	// membership records), so the tail has it.
	stChangedRoomsNear: `SELECT m.room_nid, r.room_id, r.version, m.membership, m.event_nid, m.pos, t.pos, ` + syncRoomCols + `
		FROM stream t CROSS JOIN memberships m CROSS JOIN rooms r
		WHERE t.pos > ?2 AND t.pos = (SELECT MAX(s.pos) FROM stream s WHERE s.room_nid = t.room_nid)
			AND m.user_id = ?1 AND m.room_nid = t.room_nid AND r.room_nid = t.room_nid`,
	stChangedRoomsTail: `SELECT ` + userRoomCols + `, ` + syncRoomCols + `
		FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.user_id = ?1 AND (m.pos > ?2 OR m.room_nid IN (SELECT room_nid FROM stream WHERE pos > ?2))`,
	stChangedRoomsSeek: `SELECT ` + userRoomCols + `, ` + syncRoomCols + `
		FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.user_id = ?1 AND (m.pos > ?2 OR EXISTS (SELECT 1 FROM stream s WHERE s.room_nid = m.room_nid AND s.pos > ?2))`,
	stMembershipByID: `SELECT ` + userRoomCols + `, ` + syncRoomCols + `
		FROM rooms r JOIN memberships m ON m.room_nid = r.room_nid WHERE r.room_id = ?2 AND m.user_id = ?1`,
	// What a history request (/messages, /context, /event) starts from,
	// in one statement: the snapshot's newest stream position and the
	// user's newest account data position (which keys the cache of
	// ignored users), the room and the user's membership of it (NULLs if
	// none). No row: no room.
	stRoomAccess: `SELECT (SELECT COALESCE(MAX(pos), 0) FROM stream),
			(SELECT COALESCE(MAX(pos), 0) FROM account_data WHERE user_id = ?2),
			r.room_nid, r.version, m.membership, m.event_nid, m.pos
		FROM rooms r LEFT JOIN memberships m ON m.user_id = ?2 AND m.room_nid = r.room_nid WHERE r.room_id = ?1`,
	stStreamDesc: `SELECT s.pos, s.adds, s.removes, ` + syncEventCols + `
		FROM stream s JOIN events e ON e.event_nid = s.event_nid
		WHERE s.room_nid = ? AND s.pos > ? AND s.pos <= ? ORDER BY s.pos DESC`,
	stStreamAsc: `SELECT s.pos, s.adds, s.removes, ` + syncEventCols + `
		FROM stream s JOIN events e ON e.event_nid = s.event_nid
		WHERE s.room_nid = ? AND s.pos > ? AND s.pos <= ? ORDER BY s.pos ASC`,
	// A /messages page (messages.go): the events alone, without the rows'
	// state changes nor the columns the page does not read.
	stStreamEventsDesc: `SELECT s.pos, ` + pageEventCols + `
		FROM stream s JOIN events e ON e.event_nid = s.event_nid
		WHERE s.room_nid = ? AND s.pos > ? AND s.pos <= ? ORDER BY s.pos DESC`,
	stStreamEventsAsc: `SELECT s.pos, ` + pageEventCols + `
		FROM stream s JOIN events e ON e.event_nid = s.event_nid
		WHERE s.room_nid = ? AND s.pos > ? AND s.pos <= ? ORDER BY s.pos ASC`,
	stStreamRow: `SELECT room_nid, event_nid, adds, removes FROM stream WHERE pos = ?`,
	// Rows that changed state. Written so that a partial index
	// "ON stream (room_nid, pos) WHERE adds != x'' OR removes != x''"
	// serves it: then its cost follows state changes, not messages.
	stStateChanges: `SELECT adds, removes FROM stream
		WHERE room_nid = ? AND pos > ? AND pos < ? AND (adds != x'' OR removes != x'')`,
	stCurrentState: `SELECT type_nid, key_nid, event_nid FROM current_state WHERE room_nid = ?`,
	stCurrentStateOf: `SELECT cs.type_nid, cs.key_nid, cs.event_nid FROM current_state cs
		WHERE cs.room_nid = ? AND cs.type_nid = ? AND cs.key_nid IN (SELECT value FROM json_each(?))`,
	stCurrentStateTypes: `SELECT cs.type_nid, cs.key_nid, cs.event_nid FROM current_state cs
		WHERE cs.room_nid = ? AND cs.key_nid = ? AND cs.type_nid IN (SELECT value FROM json_each(?))`,
	// [[type NID, key NID], ...] pairs, each a primary key seek.
	// CROSS JOIN keeps json_each the outer loop: left to itself the planner
	// walks the room's whole state and probes the list for each entry.
	stCurrentStateKeys: `SELECT cs.type_nid, cs.key_nid, cs.event_nid FROM json_each(?2) j
		CROSS JOIN current_state cs ON cs.room_nid = ?1 AND cs.type_nid = j.value->>0 AND cs.key_nid = j.value->>1`,
	stCurrentStateExcept: `SELECT type_nid, key_nid, event_nid FROM current_state WHERE room_nid = ? AND type_nid != ?`,
	stEventsByNID:        `SELECT ` + syncEventCols + ` FROM events e WHERE e.event_nid IN (SELECT value FROM json_each(?))`,
	stEventKeys:          `SELECT event_nid, type_nid, key_nid FROM events WHERE event_nid IN (SELECT value FROM json_each(?))`,
	stEventByID:          `SELECT e.room_nid, e.rejected, ` + syncEventCols + ` FROM events e WHERE e.event_id = ?`,
	stTypeNames:          `SELECT type_nid, type FROM event_types WHERE type_nid IN (SELECT value FROM json_each(?))`,
	stTypeNIDs:           `SELECT type_nid, type FROM event_types WHERE type IN (SELECT value FROM json_each(?))`,
	stKeyNIDs:            `SELECT key_nid, state_key FROM state_keys WHERE state_key IN (SELECT value FROM json_each(?))`,
	stSnapshot:           `SELECT blocks FROM state_snapshots WHERE snapshot_nid = ?`,
	stBlocks:             `SELECT block_nid, entries FROM state_blocks WHERE block_nid IN (SELECT value FROM json_each(?))`,
	// Bounded by one device's sends in one room (the primary key's
	// prefix); an index on transactions (event_nid) would make it a seek.
	stTxnIDs: `SELECT event_nid, txn_id FROM transactions
		WHERE device = ? AND room_nid = ? AND event_nid IN (SELECT value FROM json_each(?))`,
	// Every stream's newest position, in one statement: an empty
	// incremental sync runs no more queries than before these streams
	// existed.
	stPositions: `SELECT (SELECT COALESCE(MAX(pos), 0) FROM stream),
		(SELECT COALESCE(MAX(pos), 0) FROM account_data WHERE user_id = ?1),
		(SELECT COALESCE(MAX(pos), 0) FROM receipts),
		COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'to_device'), 0),
		(SELECT COALESCE(MAX(pos), 0) FROM device_list_changes)`,
	stKeyCounts: `SELECT algorithm, fallback, COUNT(*) FROM one_time_keys
		WHERE user_id = ? AND device_id = ? GROUP BY algorithm, fallback`,
	// Receipts of some rooms: a seek per room, for long gaps...
	stReceiptsOfRooms: `SELECT room_id, user_id, type, thread_id, event_id, ts FROM receipts
		WHERE room_id IN (SELECT value FROM json_each(?1)) AND pos > ?2 AND pos <= ?3
			AND (type != 'm.read.private' OR user_id = ?4)`,
	// ...or the newest receipts of all rooms, for short ones.
	stReceiptsTail: `SELECT room_id, user_id, type, thread_id, event_id, ts FROM receipts
		WHERE pos > ?1 AND pos <= ?2 AND (type != 'm.read.private' OR user_id = ?3)`,
	// Where a user's main-timeline read receipts point (a primary key seek).
	stOwnReadPos: `SELECT COALESCE(MAX(rc.event_pos), 0) FROM receipts rc WHERE rc.room_id = ? AND rc.user_id = ?
		AND ` + mainReadReceipt,
	stToDevice: `SELECT pos, sender, type, content FROM to_device
		WHERE user_id = ? AND device_id = ? AND pos > ? AND pos <= ? ORDER BY pos`,
	stDeviceListsSince: `SELECT user_id FROM device_list_changes WHERE pos > ? AND pos <= ?`,
	// Which of some users share a joined room with a user: each
	// candidate's rooms, each checked with one seek, so the cost follows
	// the candidates' rooms, not the viewer's.
	stSharing: `SELECT DISTINCT b.user_id FROM json_each(?1) j JOIN memberships b ON b.user_id = j.value
		WHERE b.membership = 'join' AND EXISTS (SELECT 1 FROM memberships a
			WHERE a.user_id = ?2 AND a.room_nid = b.room_nid AND a.membership = 'join')`,
	stRoomJoined:        `SELECT user_id FROM memberships WHERE room_nid = ? AND membership = 'join'`,
	stGlobalAccountData: `SELECT content FROM account_data WHERE user_id = ? AND room_id = '' AND type = ?`,
	// Both counts from the memberships_room index alone: no event is read.
	stMemberCounts: `SELECT (SELECT COUNT(*) FROM memberships WHERE room_nid = ?1 AND membership = 'join'),
		(SELECT COUNT(*) FROM memberships WHERE room_nid = ?1 AND membership = 'invite')`,
	// The index is (room_nid, membership, user_id): the ORDER BY walks it
	// and Heroes stops reading after the first few, whatever the room's
	// size.
	stHeroes: `SELECT user_id FROM memberships WHERE room_nid = ?1 AND membership = 'join' AND user_id != ?2
		ORDER BY user_id`,
}

// SyncStore runs sync's migrations (and the accounts', whose key tables
// it reads) and prepares its queries. The roomserver's and user data's
// tables must exist (MigrateRooms, MigrateUserData) before it is called.
func (db *DB) SyncStore() (*SyncStore, error) {
	if err := db.Migrate("sync", syncMigrations); err != nil {
		return nil, err
	}
	// The key counts read the client API's tables.
	if err := db.MigrateAccounts(); err != nil {
		return nil, err
	}
	s := &SyncStore{db: db}
	for i, q := range syncQueries {
		st, err := db.r.Prepare(q)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("storage: prepare sync query %d: %w", i, err)
		}
		s.stmts[i] = st
	}
	return s, nil
}

// Close releases the prepared queries.
func (s *SyncStore) Close() {
	for _, st := range s.stmts {
		if st != nil {
			st.Close()
		}
	}
}

// SyncSnapshot is one consistent read of the database. It holds a
// connection (in the browser, the only one): keep it short, never wait
// for anything while it is open, and Close it.
type SyncSnapshot struct {
	ctx context.Context
	tx  *sql.Tx
	s   *SyncStore
	st  [numSyncStmts]*sql.Stmt
}

// Snapshot begins a read transaction.
func (s *SyncStore) Snapshot(ctx context.Context) (*SyncSnapshot, error) {
	// Not TxOptions.ReadOnly: on a connection that is not already
	// query_only (the browser's single connection) the driver toggles
	// PRAGMA query_only, which expires every prepared statement on it.
	// The read pool is query_only anyway.
	tx, err := s.db.r.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("storage: begin sync read: %w", err)
	}
	return &SyncSnapshot{ctx: ctx, tx: tx, s: s}, nil
}

// Close ends the read transaction.
func (ss *SyncSnapshot) Close() {
	ss.tx.Rollback()
}

func (ss *SyncSnapshot) stmt(i syncStmt) *sql.Stmt {
	if ss.st[i] == nil {
		ss.st[i] = ss.tx.StmtContext(ss.ctx, ss.s.stmts[i])
	}
	return ss.st[i]
}

// MaxPos is the newest stream position.
func (ss *SyncSnapshot) MaxPos() (int64, error) {
	var p int64
	err := ss.stmt(stMaxPos).QueryRowContext(ss.ctx).Scan(&p)
	return p, err
}

// MaxAccountDataPos is the newest position of a user's account data.
// Positions are shared by all users, so a user's newest is a valid bound
// for what they have seen.
func (ss *SyncSnapshot) MaxAccountDataPos(userID string) (int64, error) {
	var p int64
	err := ss.stmt(stMaxAccountDataPos).QueryRowContext(ss.ctx, userID).Scan(&p)
	return p, err
}

// AccountDataSince returns a user's account data with after < pos <= upto.
func (ss *SyncSnapshot) AccountDataSince(userID string, after, upto int64) ([]AccountDataItem, error) {
	rows, err := ss.stmt(stAccountDataSince).QueryContext(ss.ctx, userID, after, upto)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AccountDataItem
	for rows.Next() {
		var it AccountDataItem
		if err := rows.Scan(&it.RoomID, &it.Type, &it.Content, &it.Pos); err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// UserRoom is a user's current membership of a room, with the room's
// newest stream position.
type UserRoom struct {
	RoomNID    int64
	RoomID     string
	Version    string
	Membership string
	EventNID   int64 // the membership event
	Pos        int64 // stream position where the membership last changed
	LatestPos  int64 // the room's newest stream position
	// The sync columns, read when SyncCols (by the queries for a sync's
	// rooms): ReadPos is where the user's main-timeline read receipts
	// point (OwnReadPos), StatePos the room's newest stream position that
	// changed its state (0 if none).
	SyncCols          bool
	ReadPos, StatePos int64
}

func scanUserRoom(s scanner) (UserRoom, error) {
	var u UserRoom
	var read, state sql.NullInt64
	err := s.Scan(&u.RoomNID, &u.RoomID, &u.Version, &u.Membership, &u.EventNID, &u.Pos, &u.LatestPos, &read, &state)
	u.SyncCols, u.ReadPos, u.StatePos = read.Valid, read.Int64, state.Int64
	return u, err
}

// UserRooms lists every room the user has a membership of, with the sync
// columns if asked.
func (ss *SyncSnapshot) UserRooms(userID string, syncCols bool) ([]UserRoom, error) {
	st := stUserRooms
	if syncCols {
		st = stUserRoomsSync
	}
	return scanUserRooms(ss.stmt(st).QueryContext(ss.ctx, userID))
}

// The longest stream gaps ChangedRooms reads with its near and its tail
// query; longer ones seek each of the user's rooms.
const (
	nearScanMax = 64
	tailScanMax = 2000
)

// ChangedRooms lists the user's rooms whose membership changed, or that
// got events, after stream position since (upto is the snapshot's
// newest), with the sync columns.
func (ss *SyncSnapshot) ChangedRooms(userID string, since, upto int64) ([]UserRoom, error) {
	st := stChangedRoomsSeek
	switch {
	case upto-since <= nearScanMax:
		st = stChangedRoomsNear
	case upto-since <= tailScanMax:
		st = stChangedRoomsTail
	}
	return scanUserRooms(ss.stmt(st).QueryContext(ss.ctx, userID, since))
}

// scanUserRooms reads every row of a query for user rooms.
func scanUserRooms(rows *sql.Rows, err error) ([]UserRoom, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []UserRoom
	for rows.Next() {
		u, err := scanUserRoom(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// MembershipByID returns a user's membership of a room, with the sync
// columns, or ErrNotFound.
func (ss *SyncSnapshot) MembershipByID(userID, roomID string) (UserRoom, error) {
	u, err := scanUserRoom(ss.stmt(stMembershipByID).QueryRowContext(ss.ctx, userID, roomID))
	return u, notFound(err)
}

// RoomAccess reads what a history request starts from: the newest
// positions of the stream and of the user's account data
// (MaxAccountDataPos), the room, and the user's membership of it
// (ur.Membership "" if none; neither LatestPos nor the sync columns are
// read). ErrNotFound: no such room.
func (ss *SyncSnapshot) RoomAccess(roomID, userID string) (maxPos, accountDataPos int64, ur UserRoom, err error) {
	var membership sql.NullString
	var eventNID, pos sql.NullInt64
	err = ss.stmt(stRoomAccess).QueryRowContext(ss.ctx, roomID, userID).Scan(&maxPos, &accountDataPos,
		&ur.RoomNID, &ur.Version, &membership, &eventNID, &pos)
	if err != nil {
		return 0, 0, UserRoom{}, notFound(err)
	}
	ur.RoomID, ur.Membership, ur.EventNID, ur.Pos = roomID, membership.String, eventNID.Int64, pos.Int64
	return maxPos, accountDataPos, ur, nil
}

// SyncEvent is the part of an event's row sync reads.
type SyncEvent struct {
	NID         int64
	ID          string
	TypeNID     int64
	KeyNID      int64 // 0: not a state event
	SnapshotNID int64 // state before the event; 0: outlier
	StreamPos   int64 // 0: not in the stream
	Redacted    bool
	JSON        []byte
}

// StreamRow is one row of the output stream with its event. Adds and
// Removes are packed event NIDs (UnpackNIDs).
type StreamRow struct {
	Pos           int64
	Adds, Removes []byte
	Event         SyncEvent
}

// StreamEach walks a room's stream rows with after < pos <= upto, newest
// first when desc, calling fn for each until it returns false. The row
// and its Event.JSON are only valid during the call (they point into the
// database's buffers or one reused between rows: copy what you keep);
// Adds and Removes are copies.
func (ss *SyncSnapshot) StreamEach(roomNID, after, upto int64, desc bool, fn func(*StreamRow) bool) error {
	st := stStreamAsc
	if desc {
		st = stStreamDesc
	}
	rows, err := ss.stmt(st).QueryContext(ss.ctx, roomNID, after, upto)
	if err != nil {
		return fmt.Errorf("storage: stream of room %d: %w", roomNID, err)
	}
	defer rows.Close()
	var r StreamRow
	var adds, removes, js sql.RawBytes
	var buf []byte // the unpacked JSON, reused row after row
	e := &r.Event
	for rows.Next() {
		if err := rows.Scan(&r.Pos, &adds, &removes, &e.NID, &e.ID, &e.TypeNID, &e.KeyNID, &e.SnapshotNID, &e.StreamPos, &e.Redacted, &js); err != nil {
			return err
		}
		r.Adds, r.Removes = nil, nil
		if len(adds) > 0 {
			r.Adds = append([]byte(nil), adds...)
		}
		if len(removes) > 0 {
			r.Removes = append([]byte(nil), removes...)
		}
		buf, e.JSON = ss.s.db.unpackInto(buf, js)
		if !fn(&r) {
			break
		}
	}
	return rows.Err()
}

// StreamRowAt returns the stream row at pos without its event, or
// ErrNotFound.
func (ss *SyncSnapshot) StreamRowAt(pos int64) (roomNID, eventNID int64, adds, removes []byte, err error) {
	err = ss.stmt(stStreamRow).QueryRowContext(ss.ctx, pos).Scan(&roomNID, &eventNID, &adds, &removes)
	return roomNID, eventNID, adds, removes, notFound(err)
}

// ErrTooManyChanges says StateChanges hit its bound.
var ErrTooManyChanges = errors.New("storage: too many state changes")

// StateChanges returns the event NIDs added to or removed from a room's
// current state by stream rows with after < pos < before. Past max rows
// it returns ErrTooManyChanges (the caller sends the full state instead).
func (ss *SyncSnapshot) StateChanges(roomNID, after, before int64, max int) ([]int64, error) {
	rows, err := ss.stmt(stStateChanges).QueryContext(ss.ctx, roomNID, after, before)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	n := 0
	for rows.Next() {
		if n++; n > max {
			return nil, ErrTooManyChanges
		}
		var adds, removes []byte
		if err := rows.Scan(&adds, &removes); err != nil {
			return nil, err
		}
		a, err := UnpackNIDs(adds)
		if err != nil {
			return nil, err
		}
		r, err := UnpackNIDs(removes)
		if err != nil {
			return nil, err
		}
		out = append(append(out, a...), r...)
	}
	return out, rows.Err()
}

func scanEntries(rows *sql.Rows, err error) ([]StateEntry, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []StateEntry
	for rows.Next() {
		var e StateEntry
		if err := rows.Scan(&e.TypeNID, &e.KeyNID, &e.EventNID); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// CurrentState returns a room's current state entries.
func (ss *SyncSnapshot) CurrentState(roomNID int64) ([]StateEntry, error) {
	return scanEntries(ss.stmt(stCurrentState).QueryContext(ss.ctx, roomNID))
}

// CurrentStateOf returns the current state entries of one type for the
// given state key NIDs.
func (ss *SyncSnapshot) CurrentStateOf(roomNID, typeNID int64, keyNIDs []int64) ([]StateEntry, error) {
	if len(keyNIDs) == 0 {
		return nil, nil
	}
	return scanEntries(ss.stmt(stCurrentStateOf).QueryContext(ss.ctx, roomNID, typeNID, jsonInts(keyNIDs)))
}

// CurrentStateTypes returns the current state entries of the given types
// with one state key.
func (ss *SyncSnapshot) CurrentStateTypes(roomNID, keyNID int64, typeNIDs []int64) ([]StateEntry, error) {
	if len(typeNIDs) == 0 {
		return nil, nil
	}
	return scanEntries(ss.stmt(stCurrentStateTypes).QueryContext(ss.ctx, roomNID, keyNID, jsonInts(typeNIDs)))
}

// CurrentStateKeys returns the current state entries for (type NID, state
// key NID) pairs; pairs with no entry are left out.
func (ss *SyncSnapshot) CurrentStateKeys(roomNID int64, keys [][2]int64) ([]StateEntry, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	b := make([]byte, 0, len(keys)*12+2)
	b = append(b, '[')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, "[%d,%d]", k[0], k[1])
	}
	b = append(b, ']')
	return scanEntries(ss.stmt(stCurrentStateKeys).QueryContext(ss.ctx, roomNID, string(b)))
}

// CurrentStateExcept returns a room's current state entries except those
// of one type (lazy loading leaves out most member events).
func (ss *SyncSnapshot) CurrentStateExcept(roomNID, typeNID int64) ([]StateEntry, error) {
	return scanEntries(ss.stmt(stCurrentStateExcept).QueryContext(ss.ctx, roomNID, typeNID))
}

// EventsByNID loads events, in no particular order; missing NIDs are
// skipped.
func (ss *SyncSnapshot) EventsByNID(nids []int64) ([]SyncEvent, error) {
	if len(nids) == 0 {
		return nil, nil
	}
	rows, err := ss.stmt(stEventsByNID).QueryContext(ss.ctx, jsonInts(nids))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]SyncEvent, 0, len(nids))
	for rows.Next() {
		var e SyncEvent
		if err := rows.Scan(&e.NID, &e.ID, &e.TypeNID, &e.KeyNID, &e.SnapshotNID, &e.StreamPos, &e.Redacted, &e.JSON); err != nil {
			return nil, err
		}
		e.JSON = ss.s.db.Unpack(e.JSON)
		out = append(out, e)
	}
	return out, rows.Err()
}

// EventKeys returns the (type, state key) of events as state entries,
// without their JSON.
func (ss *SyncSnapshot) EventKeys(nids []int64) ([]StateEntry, error) {
	if len(nids) == 0 {
		return nil, nil
	}
	rows, err := ss.stmt(stEventKeys).QueryContext(ss.ctx, jsonInts(nids))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]StateEntry, 0, len(nids))
	for rows.Next() {
		var e StateEntry
		if err := rows.Scan(&e.EventNID, &e.TypeNID, &e.KeyNID); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// EventByID loads an event with its room NID and rejected flag, or
// ErrNotFound.
func (ss *SyncSnapshot) EventByID(eventID string) (ev SyncEvent, roomNID int64, rejected bool, err error) {
	err = ss.stmt(stEventByID).QueryRowContext(ss.ctx, eventID).Scan(&roomNID, &rejected,
		&ev.NID, &ev.ID, &ev.TypeNID, &ev.KeyNID, &ev.SnapshotNID, &ev.StreamPos, &ev.Redacted, &ev.JSON)
	ev.JSON = ss.s.db.Unpack(ev.JSON)
	return ev, roomNID, rejected, notFound(err)
}

func scanNames(rows *sql.Rows, err error) (map[int64]string, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]string{}
	for rows.Next() {
		var nid int64
		var s string
		if err := rows.Scan(&nid, &s); err != nil {
			return nil, err
		}
		out[nid] = s
	}
	return out, rows.Err()
}

// TypeNames maps event type NIDs to types.
func (ss *SyncSnapshot) TypeNames(nids []int64) (map[int64]string, error) {
	return scanNames(ss.stmt(stTypeNames).QueryContext(ss.ctx, jsonInts(nids)))
}

// TypeNIDs maps event types to their NIDs; unknown types are left out.
func (ss *SyncSnapshot) TypeNIDs(types []string) (map[int64]string, error) {
	return scanNames(ss.stmt(stTypeNIDs).QueryContext(ss.ctx, jsonStrings(types)))
}

// KeyNIDs maps state keys to their NIDs; unknown keys are left out.
func (ss *SyncSnapshot) KeyNIDs(keys []string) (map[int64]string, error) {
	if len(keys) == 0 {
		return map[int64]string{}, nil
	}
	return scanNames(ss.stmt(stKeyNIDs).QueryContext(ss.ctx, jsonStrings(keys)))
}

// SnapshotState returns the state entries of a state snapshot. Blocks
// are applied in order, a later entry for the same (type, state key)
// replacing an earlier one.
func (ss *SyncSnapshot) SnapshotState(snapshotNID int64) ([]StateEntry, error) {
	if snapshotNID == 0 {
		return nil, nil
	}
	var b []byte
	if err := ss.stmt(stSnapshot).QueryRowContext(ss.ctx, snapshotNID).Scan(&b); err != nil {
		return nil, fmt.Errorf("storage: snapshot %d: %w", snapshotNID, notFound(err))
	}
	blockNIDs, err := UnpackNIDs(b)
	if err != nil {
		return nil, err
	}
	rows, err := ss.stmt(stBlocks).QueryContext(ss.ctx, jsonInts(blockNIDs))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	blocks := make(map[int64][]int64, len(blockNIDs))
	for rows.Next() {
		var nid int64
		var entries []byte
		if err := rows.Scan(&nid, &entries); err != nil {
			return nil, err
		}
		if blocks[nid], err = UnpackNIDs(entries); err != nil {
			return nil, err
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	type key struct{ t, k int64 }
	idx := map[key]int{}
	var out []StateEntry
	for _, bn := range blockNIDs {
		if bn == 0 { // a bucket that never held state
			continue
		}
		nids, ok := blocks[bn]
		if !ok || len(nids)%3 != 0 {
			return nil, fmt.Errorf("storage: snapshot %d: missing or corrupt block %d", snapshotNID, bn)
		}
		for i := 0; i < len(nids); i += 3 {
			e := StateEntry{nids[i], nids[i+1], nids[i+2]}
			if j, ok := idx[key{e.TypeNID, e.KeyNID}]; ok {
				out[j] = e
				continue
			}
			idx[key{e.TypeNID, e.KeyNID}] = len(out)
			out = append(out, e)
		}
	}
	return out, nil
}

// TxnIDs returns the client transaction IDs a device used for events of a
// room, by event NID.
func (ss *SyncSnapshot) TxnIDs(device string, roomNID int64, eventNIDs []int64) (map[int64]string, error) {
	if len(eventNIDs) == 0 || device == "" {
		return nil, nil
	}
	dev := deviceHash(device)
	found, unknown := ss.s.db.recent.lookup(dev, eventNIDs)
	if len(unknown) == 0 {
		return found, nil
	}
	read, err := scanNames(ss.stmt(stTxnIDs).QueryContext(ss.ctx, dev, roomNID, jsonInts(unknown)))
	if err != nil || len(found) == 0 {
		return read, err
	}
	maps.Copy(found, read)
	return found, nil
}

func jsonStrings(ss []string) string {
	b := make([]byte, 0, len(ss)*16+2)
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return string(append(b, ']'))
}

// appendJSONString quotes s as a JSON string (SQLite's json_each reads it).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// MemberCounts returns how many users are joined to and invited to a
// room, from the memberships table (no state events are loaded).
func (ss *SyncSnapshot) MemberCounts(roomNID int64) (joined, invited int, err error) {
	err = ss.stmt(stMemberCounts).QueryRowContext(ss.ctx, roomNID).Scan(&joined, &invited)
	if err != nil {
		return 0, 0, fmt.Errorf("storage: member counts of room %d: %w", roomNID, err)
	}
	return joined, invited, nil
}

// Heroes returns up to max joined members of a room other than userID,
// in user ID order: a stable pick whose cost does not grow with the room.
func (ss *SyncSnapshot) Heroes(roomNID int64, userID string, max int) ([]string, error) {
	rows, err := ss.stmt(stHeroes).QueryContext(ss.ctx, roomNID, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: heroes of room %d: %w", roomNID, err)
	}
	defer rows.Close()
	var out []string
	for len(out) < max && rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("storage: heroes of room %d: %w", roomNID, err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}
