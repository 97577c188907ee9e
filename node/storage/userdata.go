package storage

import (
	"context"
)

// Per-user data that both the client API (writes) and sync (reads) need:
// account data, global and per room, with its own stream position, and
// stored filters.
var userdataMigrations = []string{
	`CREATE TABLE account_data (
		user_id TEXT NOT NULL,
		room_id TEXT NOT NULL,       -- '' for global account data
		type TEXT NOT NULL,
		content BLOB NOT NULL,
		pos INTEGER NOT NULL,
		PRIMARY KEY (user_id, room_id, type)
	) WITHOUT ROWID;
	CREATE INDEX account_data_pos ON account_data (user_id, pos);
	CREATE TABLE filters (
		filter_id INTEGER PRIMARY KEY,
		user_id TEXT NOT NULL,
		filter BLOB NOT NULL
	);`,
	// MAX(pos) over all users, for the next position, without a scan.
	`CREATE INDEX account_data_pos_all ON account_data (pos);`,
}

// MigrateUserData creates or updates the account data and filter tables.
func (db *DB) MigrateUserData() error { return db.Migrate("userdata", userdataMigrations) }

// PutAccountData stores one account data item and returns its new stream
// position (positions are shared by all users and only grow).
func (db *DB) PutAccountData(ctx context.Context, userID, roomID, typ string, content []byte) (int64, error) {
	var pos int64
	err := db.Write(ctx, func(tx *Tx) error {
		if err := tx.QueryRow(`SELECT COALESCE(MAX(pos), 0) + 1 FROM account_data`).Scan(&pos); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO account_data (user_id, room_id, type, content, pos) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT DO UPDATE SET content = excluded.content, pos = excluded.pos`, userID, roomID, typ, content, pos)
		return err
	})
	return pos, err
}

// AccountData returns one account data item's content, or ErrNotFound.
func (db *DB) AccountData(ctx context.Context, userID, roomID, typ string) ([]byte, error) {
	var c []byte
	err := db.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?`, userID, roomID, typ).Scan(&c)
	return c, notFound(err)
}

// AccountDataItem is one stored account data item.
type AccountDataItem struct {
	RoomID  string // '' for global
	Type    string
	Content []byte
	Pos     int64
}

// AccountDataSince returns a user's account data changed after pos (all of
// it for pos 0), and the highest position in the table.
func (db *DB) AccountDataSince(ctx context.Context, userID string, pos int64) ([]AccountDataItem, error) {
	rows, err := db.Query(ctx, `SELECT room_id, type, content, pos FROM account_data WHERE user_id = ? AND pos > ? ORDER BY pos`, userID, pos)
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

// MaxAccountDataPos is the newest account data position.
func (db *DB) MaxAccountDataPos(ctx context.Context) (int64, error) {
	var pos int64
	err := db.QueryRow(ctx, `SELECT COALESCE(MAX(pos), 0) FROM account_data`).Scan(&pos)
	return pos, err
}

// PutFilter stores a filter and returns its ID.
func (db *DB) PutFilter(ctx context.Context, userID string, filter []byte) (int64, error) {
	var id int64
	err := db.Write(ctx, func(tx *Tx) error {
		var err error
		id, err = tx.Insert(`INSERT INTO filters (user_id, filter) VALUES (?, ?)`, userID, filter)
		return err
	})
	return id, err
}

// Filter returns a user's stored filter, or ErrNotFound.
func (db *DB) Filter(ctx context.Context, userID string, id int64) ([]byte, error) {
	var f []byte
	err := db.QueryRow(ctx, `SELECT filter FROM filters WHERE user_id = ? AND filter_id = ?`, userID, id).Scan(&f)
	return f, notFound(err)
}
