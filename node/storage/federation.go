package storage

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Federation's tables: persistent per-destination queues of PDUs (event
// NIDs, the JSON stays in events) and EDUs, the position in the output
// stream up to which events have been queued, the remote events this
// server must pass on (joins and leaves it took part in as the resident
// server), and the transactions received from each origin (for
// de-duplication). Federation also reads the roomserver's stream, events,
// rooms, memberships and state tables; it never writes them.
var federationMigrations = []string{
	`CREATE TABLE fed_cursor (
		id INTEGER PRIMARY KEY CHECK (id = 1),
		pos INTEGER NOT NULL
	);
	CREATE TABLE fed_pdus (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		dest TEXT NOT NULL,
		event_nid INTEGER NOT NULL
	);
	CREATE INDEX fed_pdus_dest ON fed_pdus (dest, seq);
	CREATE TABLE fed_edus (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		dest TEXT NOT NULL,
		edu BLOB NOT NULL
	);
	CREATE INDEX fed_edus_dest ON fed_edus (dest, seq);
	CREATE TABLE fed_forward (
		event_id TEXT PRIMARY KEY
	) WITHOUT ROWID;
	CREATE TABLE fed_txns (
		origin TEXT NOT NULL,
		txn_id TEXT NOT NULL,
		ts INTEGER NOT NULL,
		response BLOB NOT NULL,
		PRIMARY KEY (origin, txn_id)
	) WITHOUT ROWID;`,
	// Durable EDUs (to-device messages: E2EE room keys) are never trimmed
	// to make room for ephemeral ones (typing, presence).
	`ALTER TABLE fed_edus ADD COLUMN durable INTEGER NOT NULL DEFAULT 0;`,
}

// MigrateFederation creates or updates federation's tables.
func (db *DB) MigrateFederation() error { return db.Migrate("federation", federationMigrations) }

// FedCursor returns the stream position up to which events have been
// queued for other servers. A new cursor starts at the stream's end:
// history from before federation ran is not pushed to anyone.
func (db *DB) FedCursor(ctx context.Context) (int64, error) {
	var pos int64
	err := db.Write(ctx, func(tx *Tx) error {
		err := tx.QueryRow(`SELECT pos FROM fed_cursor WHERE id = 1`).Scan(&pos)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if err := tx.QueryRow(`SELECT COALESCE(MAX(pos), 0) FROM stream`).Scan(&pos); err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO fed_cursor (id, pos) VALUES (1, ?)`, pos)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("storage: federation cursor: %w", err)
	}
	return pos, nil
}

// FedStreamRow is one output stream row as federation reads it.
type FedStreamRow struct {
	Pos          int64
	RoomNID      int64
	RoomID       string
	EventNID     int64
	EventID      string
	JSON         []byte
	StateChanged bool // the row added or removed state
}

// FedStreamAfter returns up to limit stream rows after pos, oldest first.
func (db *DB) FedStreamAfter(ctx context.Context, pos int64, limit int) ([]FedStreamRow, error) {
	rows, err := db.Query(ctx, withLimit(`SELECT s.pos, s.room_nid, r.room_id, s.event_nid, e.event_id, e.json,
			length(s.adds) + length(s.removes) > 0
		FROM stream s JOIN events e ON e.event_nid = s.event_nid JOIN rooms r ON r.room_nid = s.room_nid
		WHERE s.pos > ? ORDER BY s.pos`, limit), pos)
	if err != nil {
		return nil, fmt.Errorf("storage: stream after %d: %w", pos, err)
	}
	defer rows.Close()
	var out []FedStreamRow
	for rows.Next() {
		var r FedStreamRow
		if err := rows.Scan(&r.Pos, &r.RoomNID, &r.RoomID, &r.EventNID, &r.EventID, &r.JSON, &r.StateChanged); err != nil {
			return nil, err
		}
		r.JSON = db.Unpack(r.JSON)
		out = append(out, r)
	}
	return out, rows.Err()
}

// JoinedUsers lists the users whose current membership of a room is join.
func (db *DB) JoinedUsers(ctx context.Context, roomNID int64) ([]string, error) {
	return db.strings(ctx, `SELECT user_id FROM memberships WHERE room_nid = ? AND membership = 'join'`, roomNID)
}

// FedQueued is one PDU to send to a destination.
type FedQueued struct {
	Dest     string
	EventNID int64
}

// EnqueuePDUs adds PDUs to destinations' queues and moves the stream
// cursor to pos, in one commit. Forward markers of the queued events are
// dropped.
func (db *DB) EnqueuePDUs(ctx context.Context, pos int64, items []FedQueued, forwarded []string) error {
	return db.Write(ctx, func(tx *Tx) error {
		for _, it := range items {
			if _, err := tx.Exec(`INSERT INTO fed_pdus (dest, event_nid) VALUES (?, ?)`, it.Dest, it.EventNID); err != nil {
				return fmt.Errorf("storage: enqueue pdu: %w", err)
			}
		}
		for _, id := range forwarded {
			if _, err := tx.Exec(`DELETE FROM fed_forward WHERE event_id = ?`, id); err != nil {
				return fmt.Errorf("storage: forward marker: %w", err)
			}
		}
		_, err := tx.Exec(`UPDATE fed_cursor SET pos = ? WHERE id = 1`, pos)
		return err
	})
}

// RequeuePDUs queues PDUs whose first attempt failed, leaving the cursor,
// in front of everything queued: anything queued meanwhile is newer. Their
// seqs go below every seq in the queues and below floor, the lowest
// handed out so before (a seq names the transaction carrying it, so one
// is never used twice in a run); it returns the new floor.
func (db *DB) RequeuePDUs(ctx context.Context, items []FedQueued, floor int64) (int64, error) {
	err := db.Write(ctx, func(tx *Tx) error {
		var lowest sql.NullInt64
		if err := tx.QueryRow(`SELECT MIN(seq) FROM fed_pdus`).Scan(&lowest); err != nil {
			return fmt.Errorf("storage: requeue: %w", err)
		}
		if lowest.Valid {
			floor = min(floor, lowest.Int64)
		}
		floor -= int64(len(items))
		for i, it := range items {
			if _, err := tx.Exec(`INSERT INTO fed_pdus (seq, dest, event_nid) VALUES (?, ?, ?)`, floor+int64(i), it.Dest, it.EventNID); err != nil {
				return fmt.Errorf("storage: requeue pdu: %w", err)
			}
		}
		return nil
	})
	return floor, err
}

// TrimPDUQueue keeps only the newest keep PDUs queued for dest and
// returns how many it dropped.
func (db *DB) TrimPDUQueue(ctx context.Context, dest string, keep int) (int64, error) {
	var n int64
	err := db.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec(`DELETE FROM fed_pdus WHERE dest = ? AND seq <= (
			SELECT seq FROM fed_pdus WHERE dest = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)`, dest, dest, keep)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// EnqueueEDU adds an EDU to each destination's queue. Among the EDUs that
// are not durable, the oldest beyond keep per destination are dropped; a
// durable EDU is kept until sent.
func (db *DB) EnqueueEDU(ctx context.Context, dests []string, edu []byte, durable bool, keep int) error {
	return db.Write(ctx, func(tx *Tx) error {
		for _, d := range dests {
			if _, err := tx.Exec(`INSERT INTO fed_edus (dest, edu, durable) VALUES (?, ?, ?)`, d, edu, durable); err != nil {
				return fmt.Errorf("storage: enqueue edu: %w", err)
			}
			if durable {
				continue
			}
			if _, err := tx.Exec(`DELETE FROM fed_edus WHERE dest = ? AND durable = 0 AND seq <= (
				SELECT seq FROM fed_edus WHERE dest = ? AND durable = 0 ORDER BY seq DESC LIMIT 1 OFFSET ?)`, d, d, keep); err != nil {
				return fmt.Errorf("storage: trim edus: %w", err)
			}
		}
		return nil
	})
}

// FedPDU is a queued PDU with its event's JSON.
type FedPDU struct {
	Seq  int64
	JSON []byte
}

// FedEDU is a queued EDU.
type FedEDU struct {
	Seq  int64
	JSON []byte
}

// PeekQueue returns the oldest PDUs and EDUs queued for dest. PDUs whose
// event is gone or was rejected come back with nil JSON so they are
// deleted with the rest.
func (db *DB) PeekQueue(ctx context.Context, dest string, maxPDUs, maxEDUs int) ([]FedPDU, []FedEDU, error) {
	// One statement for both queues: a sender peeks after every event.
	rows, err := db.Query(ctx, `SELECT * FROM (`+withLimit(`SELECT 0, q.seq, CASE WHEN e.rejected THEN NULL ELSE e.json END
		FROM fed_pdus q LEFT JOIN events e ON e.event_nid = q.event_nid
		WHERE q.dest = ?1 ORDER BY q.seq`, maxPDUs)+`) UNION ALL SELECT * FROM (`+
		withLimit(`SELECT 1, seq, edu FROM fed_edus WHERE dest = ?1 ORDER BY seq`, maxEDUs)+`)`, dest)
	if err != nil {
		return nil, nil, fmt.Errorf("storage: peek queue of %s: %w", dest, err)
	}
	defer rows.Close()
	var pdus []FedPDU
	var edus []FedEDU
	for rows.Next() {
		var edu bool
		var seq int64
		var b []byte
		if err := rows.Scan(&edu, &seq, &b); err != nil {
			return nil, nil, err
		}
		switch {
		case edu:
			edus = append(edus, FedEDU{Seq: seq, JSON: b})
		case b != nil:
			pdus = append(pdus, FedPDU{Seq: seq, JSON: db.Unpack(b)})
		default:
			pdus = append(pdus, FedPDU{Seq: seq})
		}
	}
	return pdus, edus, rows.Err()
}

// DequeueSent deletes what a delivered transaction carried: dest's PDUs
// up to pduSeq and EDUs up to eduSeq (0: none).
func (db *DB) DequeueSent(ctx context.Context, dest string, pduSeq, eduSeq int64) error {
	return db.Write(ctx, func(tx *Tx) error {
		if pduSeq > 0 {
			if _, err := tx.Exec(`DELETE FROM fed_pdus WHERE dest = ? AND seq <= ?`, dest, pduSeq); err != nil {
				return fmt.Errorf("storage: dequeue pdus: %w", err)
			}
		}
		if eduSeq > 0 {
			if _, err := tx.Exec(`DELETE FROM fed_edus WHERE dest = ? AND seq <= ?`, dest, eduSeq); err != nil {
				return fmt.Errorf("storage: dequeue edus: %w", err)
			}
		}
		return nil
	})
}

// QueuedDestinations lists the destinations with something queued, and
// how many PDUs each has waiting.
func (db *DB) QueuedDestinations(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	for _, q := range []string{
		`SELECT dest, COUNT(*) FROM fed_pdus GROUP BY dest`,
		`SELECT dest, 0 FROM fed_edus GROUP BY dest`,
	} {
		rows, err := db.Query(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("storage: queued destinations: %w", err)
		}
		for rows.Next() {
			var d string
			var n int
			if err := rows.Scan(&d, &n); err != nil {
				rows.Close()
				return nil, err
			}
			out[d] += n
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// MarkForward records that a remote event, once stored, must be passed on
// to the other servers in its room (a join or leave this server handled
// as the resident server).
func (db *DB) MarkForward(ctx context.Context, eventID string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`INSERT INTO fed_forward (event_id) VALUES (?) ON CONFLICT DO NOTHING`, eventID)
		return err
	})
}

// ForwardMarked reports whether MarkForward was called for an event that
// has not been queued yet.
func (db *DB) ForwardMarked(ctx context.Context, eventID string) (bool, error) {
	var one int
	err := db.QueryRow(ctx, `SELECT 1 FROM fed_forward WHERE event_id = ?`, eventID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// FedTxnResponse returns the answer given to a transaction from origin,
// or ErrNotFound if it was never processed.
func (db *DB) FedTxnResponse(ctx context.Context, origin, txnID string) ([]byte, error) {
	if b, ok := db.fedTxns.get(origin, txnID); ok {
		return b, nil
	}
	var b []byte
	err := db.QueryRow(ctx, `SELECT response FROM fed_txns WHERE origin = ? AND txn_id = ?`, origin, txnID).Scan(&b)
	return b, notFound(err)
}

// PutFedTxn records the answer to a processed transaction. The record
// goes into the next commit, whatever it is (most often the next
// transaction's events'), or into one of its own within fedTxnDelay: a
// commit of its own for every transaction received cost a received
// message a second commit (a millisecond in the browser). A crash may
// lose a record not yet written, and then a retry is processed again,
// which changes nothing: events already stored are known as such, a
// to-device message is stored once by its message_id, and typing,
// receipts and presence say again what they said.
func (db *DB) PutFedTxn(ctx context.Context, origin, txnID string, ts int64, response []byte) error {
	if db.fedTxns.put(fedTxn{origin: origin, txnID: txnID, ts: ts, response: response}) {
		time.AfterFunc(fedTxnDelay, db.flushFedTxns)
	}
	return nil
}

// fedTxnDelay bounds how long a transaction's record waits for a commit.
const fedTxnDelay = time.Second

// flushFedTxns commits the records waiting, if any.
func (db *DB) flushFedTxns() {
	if db.fedTxns.waiting() {
		db.Write(context.Background(), func(*Tx) error { return nil }) // commit writes them
	}
}

type fedTxn struct {
	origin, txnID string
	ts            int64
	response      []byte
}

// fedTxnsWaiting are the transaction records not yet written. A record
// stays until the commit that writes it succeeds, so a lookup always
// finds it, here or in the table.
type fedTxnsWaiting struct {
	mu sync.Mutex
	m  map[[2]string]fedTxn
}

// put adds a record and reports whether it is the first one waiting.
func (w *fedTxnsWaiting) put(t fedTxn) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[[2]string]fedTxn{}
	}
	w.m[[2]string{t.origin, t.txnID}] = t
	return len(w.m) == 1
}

func (w *fedTxnsWaiting) get(origin, txnID string) ([]byte, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.m[[2]string{origin, txnID}]
	return t.response, ok
}

func (w *fedTxnsWaiting) waiting() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.m) > 0
}

// write inserts the records waiting and returns them, for done once
// the commit succeeds. A record that cannot be written is dropped: it
// would only spare a retry its processing.
func (w *fedTxnsWaiting) write(tx *Tx) []fedTxn {
	w.mu.Lock()
	if len(w.m) == 0 {
		w.mu.Unlock()
		return nil
	}
	ts := make([]fedTxn, 0, len(w.m))
	for _, t := range w.m {
		ts = append(ts, t)
	}
	w.mu.Unlock()
	for _, t := range ts {
		if _, err := tx.Exec(`INSERT INTO fed_txns (origin, txn_id, ts, response) VALUES (?, ?, ?, ?)
			ON CONFLICT DO UPDATE SET ts = excluded.ts, response = excluded.response`, t.origin, t.txnID, t.ts, t.response); err != nil {
			slog.Warn("storage: dropping a transaction record", "origin", t.origin, "txn", t.txnID, "err", err)
			w.done([]fedTxn{t})
		}
	}
	return ts
}

// done forgets the records a commit wrote (those not put again since).
func (w *fedTxnsWaiting) done(ts []fedTxn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range ts {
		k := [2]string{t.origin, t.txnID}
		if cur, ok := w.m[k]; ok && cur.ts == t.ts && bytes.Equal(cur.response, t.response) {
			delete(w.m, k)
		}
	}
}

// PruneFedTxns forgets transactions received before ts.
func (db *DB) PruneFedTxns(ctx context.Context, ts int64) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`DELETE FROM fed_txns WHERE ts < ?`, ts)
		return err
	})
}

// StateKeysByNID returns the state key strings of key NIDs.
func (db *DB) StateKeysByNID(ctx context.Context, nids []int64) (map[int64]string, error) {
	out := make(map[int64]string, len(nids))
	if len(nids) == 0 {
		return out, nil
	}
	rows, err := db.Query(ctx, `SELECT key_nid, state_key FROM state_keys WHERE key_nid IN (SELECT value FROM json_each(?))`, jsonInts(nids))
	if err != nil {
		return nil, fmt.Errorf("storage: state keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var n int64
		var k string
		if err := rows.Scan(&n, &k); err != nil {
			return nil, err
		}
		out[n] = k
	}
	return out, rows.Err()
}

// RoomNIDOf returns a room's NID, or ErrNotFound.
func (db *DB) RoomNIDOf(ctx context.Context, roomID string) (int64, error) {
	var nid int64
	err := db.QueryRow(ctx, `SELECT room_nid FROM rooms WHERE room_id = ?`, roomID).Scan(&nid)
	return nid, notFound(err)
}

// JoinedLocalCount counts the users of a server (user IDs ending in
// ":server") joined to a room.
func (db *DB) JoinedLocalCount(ctx context.Context, roomNID int64, server string) (int, error) {
	var n int
	suffix := ":" + server
	err := db.QueryRow(ctx, `SELECT COUNT(*) FROM memberships WHERE room_nid = ? AND membership = 'join'
		AND substr(user_id, -length(?)) = ?`, roomNID, suffix, suffix).Scan(&n)
	return n, err
}

// MembershipEvent returns a user's current membership of a room and the
// event NID that set it, or ErrNotFound.
func (db *DB) MembershipEvent(ctx context.Context, userID string, roomNID int64) (string, int64, error) {
	var m string
	var nid int64
	err := db.QueryRow(ctx, `SELECT membership, event_nid FROM memberships WHERE user_id = ? AND room_nid = ?`, userID, roomNID).Scan(&m, &nid)
	return m, nid, notFound(err)
}

// UnmarkForward drops a forward marker whose event was not stored.
func (db *DB) UnmarkForward(ctx context.Context, eventID string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`DELETE FROM fed_forward WHERE event_id = ?`, eventID)
		return err
	})
}
