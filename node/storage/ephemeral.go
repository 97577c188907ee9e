package storage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
)

// Sync's own tables (migration component "sync"): read receipts, to-device
// messages waiting for their device, the keys that make to-device sends
// idempotent, and the newest device-list change of each user. Typing and
// presence live in memory (they are stale in seconds anyway).
//
// Each table's positions only grow, so they serve as sync token streams:
// receipts and device-list changes are upserted with MAX(pos)+1 (their
// maximum never falls), and to-device rows, which are deleted once
// acknowledged, take AUTOINCREMENT positions whose high-water mark
// (sqlite_sequence) survives the deletes.
var syncMigrations = []string{
	`CREATE TABLE receipts (
		room_id TEXT NOT NULL,
		user_id TEXT NOT NULL,
		type TEXT NOT NULL,              -- m.read or m.read.private
		thread_id TEXT NOT NULL,         -- '' unthreaded
		event_id TEXT NOT NULL,
		event_pos INTEGER NOT NULL,      -- the event's stream position (< 0: backfilled); 0: not known here
		ts INTEGER NOT NULL,
		pos INTEGER NOT NULL,
		PRIMARY KEY (room_id, user_id, type, thread_id)
	) WITHOUT ROWID;
	CREATE INDEX receipts_room_pos ON receipts (room_id, pos);
	CREATE INDEX receipts_pos ON receipts (pos);
	CREATE TABLE to_device (
		pos INTEGER PRIMARY KEY AUTOINCREMENT,
		user_id TEXT NOT NULL,
		device_id TEXT NOT NULL,
		sender TEXT NOT NULL,
		type TEXT NOT NULL,
		content BLOB NOT NULL
	);
	CREATE INDEX to_device_target ON to_device (user_id, device_id, pos);
	-- sends already taken in: a client's (user, device, txn ID) or a
	-- server's (origin, message_id), hashed
	CREATE TABLE to_device_seen (
		key BLOB PRIMARY KEY,
		ts INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE device_list_changes (
		user_id TEXT PRIMARY KEY,
		pos INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX device_list_changes_pos ON device_list_changes (pos);`,
}

// Receipt is one user's read receipt in a room.
type Receipt struct {
	RoomID   string
	UserID   string
	Type     string // m.read or m.read.private
	ThreadID string // "" for an unthreaded receipt
	EventID  string
	TS       int64 // milliseconds
}

// PutReceipt stores a receipt and returns its stream position, or 0 when
// it changed nothing: the same event again, or an event older (in this
// node's stream) than the one the user's receipt already points at —
// receipts only move forward.
func (db *DB) PutReceipt(ctx context.Context, r Receipt) (int64, error) {
	var pos int64
	err := db.Write(ctx, func(tx *Tx) error {
		var evPos int64
		err := tx.QueryRow(`SELECT stream_pos FROM events WHERE event_id = ?`, r.EventID).Scan(&evPos)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("receipt event: %w", err)
		}
		var oldID string
		var oldPos int64
		err = tx.QueryRow(`SELECT event_id, event_pos FROM receipts WHERE room_id = ? AND user_id = ? AND type = ? AND thread_id = ?`,
			r.RoomID, r.UserID, r.Type, r.ThreadID).Scan(&oldID, &oldPos)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("previous receipt: %w", err)
		case oldID == r.EventID || (evPos != 0 && oldPos > evPos): // (backfilled history is below 0)
			return nil
		}
		if err := tx.QueryRow(`SELECT COALESCE(MAX(pos), 0) + 1 FROM receipts`).Scan(&pos); err != nil {
			return fmt.Errorf("receipt position: %w", err)
		}
		_, err = tx.Exec(`INSERT INTO receipts (room_id, user_id, type, thread_id, event_id, event_pos, ts, pos)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT DO UPDATE SET event_id = excluded.event_id, event_pos = excluded.event_pos,
				ts = excluded.ts, pos = excluded.pos`,
			r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, evPos, r.TS, pos)
		if err != nil {
			return fmt.Errorf("store receipt: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("storage: %w", err)
	}
	return pos, nil
}

// ToDeviceMessage is one to-device message for one device of a user of
// this node; DeviceID "*" means each of the user's devices.
type ToDeviceMessage struct {
	UserID   string
	DeviceID string
	Sender   string
	Type     string
	Content  []byte
}

// ToDeviceTarget is a device that got messages, with the newest position.
type ToDeviceTarget struct {
	UserID, DeviceID string
	Pos              int64
}

// ToDeviceKey names a send for de-duplication: a client's transaction
// (kind "txn": user, device, txn ID) or a federation message (kind "msg":
// origin, message_id).
func ToDeviceKey(kind string, parts ...string) []byte {
	h := sha256.New()
	h.Write([]byte(kind))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return h.Sum(nil)[:16]
}

// PutToDevice stores messages for local devices, once per key: a key seen
// before (a retried transaction, a message_id that came by two routes)
// stores nothing and returns dup. Messages to unknown devices are dropped.
// nowMS is recorded with the key so old keys can be pruned.
func (db *DB) PutToDevice(ctx context.Context, key []byte, nowMS int64, msgs []ToDeviceMessage) (targets []ToDeviceTarget, dup bool, err error) {
	err = db.Write(ctx, func(tx *Tx) error {
		targets = targets[:0]
		if key != nil {
			res, err := tx.Exec(`INSERT INTO to_device_seen (key, ts) VALUES (?, ?) ON CONFLICT DO NOTHING`, key, nowMS)
			if err != nil {
				return fmt.Errorf("to-device key: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				dup = true
				return nil
			}
		}
		newest := map[[2]string]int64{}
		for _, m := range msgs {
			q := `INSERT INTO to_device (user_id, device_id, sender, type, content)
				SELECT user_id, device_id, ?, ?, ? FROM devices WHERE user_id = ? AND device_id = ? RETURNING device_id, pos`
			args := []any{m.Sender, m.Type, m.Content, m.UserID, m.DeviceID}
			if m.DeviceID == "*" {
				q = `INSERT INTO to_device (user_id, device_id, sender, type, content)
					SELECT user_id, device_id, ?, ?, ? FROM devices WHERE user_id = ? RETURNING device_id, pos`
				args = args[:4]
			}
			rows, err := tx.Query(q, args...)
			if err != nil {
				return fmt.Errorf("store to-device message: %w", err)
			}
			for rows.Next() {
				var dev string
				var pos int64
				if err := rows.Scan(&dev, &pos); err != nil {
					rows.Close()
					return err
				}
				k := [2]string{m.UserID, dev}
				newest[k] = max(newest[k], pos)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("store to-device message: %w", err)
			}
		}
		for k, p := range newest {
			targets = append(targets, ToDeviceTarget{UserID: k[0], DeviceID: k[1], Pos: p})
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("storage: %w", err)
	}
	return targets, dup, nil
}

// AckToDevice deletes a device's messages up to pos: its client has
// confirmed them by syncing from a token past them.
func (db *DB) AckToDevice(ctx context.Context, userID, deviceID string, pos int64) error {
	err := db.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`DELETE FROM to_device WHERE user_id = ? AND device_id = ? AND pos <= ?`, userID, deviceID, pos)
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: acknowledge to-device messages: %w", err)
	}
	return nil
}

// PendingToDevice counts the messages waiting for a device.
func (db *DB) PendingToDevice(ctx context.Context, userID, deviceID string) (int, error) {
	var n int
	err := db.QueryRow(ctx, `SELECT COUNT(*) FROM to_device WHERE user_id = ? AND device_id = ?`, userID, deviceID).Scan(&n)
	return n, err
}

// PruneToDevice forgets de-duplication keys recorded before beforeMS and
// the messages of devices that no longer exist (acknowledged messages are
// deleted as they go, so the table stays small and this is cheap).
func (db *DB) PruneToDevice(ctx context.Context, beforeMS int64) error {
	err := db.Write(ctx, func(tx *Tx) error {
		if _, err := tx.Exec(`DELETE FROM to_device_seen WHERE ts < ?`, beforeMS); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM to_device WHERE NOT EXISTS (SELECT 1 FROM devices d
			WHERE d.user_id = to_device.user_id AND d.device_id = to_device.device_id)`)
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: prune to-device keys: %w", err)
	}
	return nil
}

// MarkDeviceListChanged records that users' devices or keys changed and
// returns the new device-list stream position.
func (db *DB) MarkDeviceListChanged(ctx context.Context, userIDs ...string) (int64, error) {
	var pos int64
	err := db.Write(ctx, func(tx *Tx) error {
		if err := tx.QueryRow(`SELECT COALESCE(MAX(pos), 0) + 1 FROM device_list_changes`).Scan(&pos); err != nil {
			return err
		}
		for _, u := range userIDs {
			if _, err := tx.Exec(`INSERT INTO device_list_changes (user_id, pos) VALUES (?, ?)
				ON CONFLICT DO UPDATE SET pos = excluded.pos`, u, pos); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("storage: mark device list changed: %w", err)
	}
	return pos, nil
}

// HashHex is a short printable digest, for message IDs derived from a
// client's transaction.
func HashHex(parts ...string) string {
	return hex.EncodeToString(ToDeviceKey("id", parts...))
}
