package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The client API's own tables: accounts with their profiles, devices with
// their access tokens (stored as hashes: a copied database file holds no
// usable token), room aliases, the public room directory, forgotten rooms
// and end-to-end encryption keys.
var accountsMigrations = []string{
	`CREATE TABLE accounts (
		user_id TEXT PRIMARY KEY,
		password_hash TEXT NOT NULL,      -- '' : no password login
		displayname TEXT,                 -- NULL: none set
		avatar_url TEXT,
		created_ts INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE devices (
		user_id TEXT NOT NULL,
		device_id TEXT NOT NULL,
		token_hash TEXT NOT NULL UNIQUE,
		display_name TEXT,
		created_ts INTEGER NOT NULL,
		last_seen_ts INTEGER NOT NULL,
		last_seen_ip TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (user_id, device_id)
	) WITHOUT ROWID;
	CREATE TABLE room_aliases (
		alias TEXT PRIMARY KEY,
		room_id TEXT NOT NULL,            -- '' while a createRoom holds it
		creator TEXT NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX room_aliases_room ON room_aliases (room_id);
	CREATE TABLE room_directory (
		room_id TEXT PRIMARY KEY
	) WITHOUT ROWID;
	CREATE TABLE forgotten_rooms (
		user_id TEXT NOT NULL,
		room_id TEXT NOT NULL,
		PRIMARY KEY (user_id, room_id)
	) WITHOUT ROWID;
	CREATE TABLE device_keys (
		user_id TEXT NOT NULL,
		device_id TEXT NOT NULL,
		keys BLOB NOT NULL,
		PRIMARY KEY (user_id, device_id)
	) WITHOUT ROWID;
	CREATE TABLE one_time_keys (
		user_id TEXT NOT NULL,
		device_id TEXT NOT NULL,
		key_id TEXT NOT NULL,             -- "algorithm:id"
		algorithm TEXT NOT NULL,
		fallback INTEGER NOT NULL,        -- 1: a fallback key, kept when claimed
		key BLOB NOT NULL,
		PRIMARY KEY (user_id, device_id, fallback, key_id)
	) WITHOUT ROWID;`,
}

// MigrateAccounts creates or updates the client API's tables. It also
// drops alias reservations that a crash left behind (a createRoom that
// never finished).
func (db *DB) MigrateAccounts() error {
	if err := db.Migrate("accounts", accountsMigrations); err != nil {
		return err
	}
	return db.Write(context.Background(), func(tx *Tx) error {
		if _, err := tx.Exec(`DELETE FROM room_aliases WHERE room_id = ''`); err != nil {
			return fmt.Errorf("storage: drop stale alias reservations: %w", err)
		}
		return nil
	})
}

// ErrExists is returned when a row to create already exists.
var ErrExists = errors.New("storage: already exists")

// NewAccount is everything a registration writes, in one transaction.
type NewAccount struct {
	UserID       string
	PasswordHash string
	DisplayName  string
	// PushRules, when set, is stored as the user's m.push_rules account
	// data so that /sync delivers the default rules like any account data.
	PushRules []byte
	// Device, when set, is the first device (nil for inhibit_login).
	Device *NewDevice
}

// NewDevice is a device to create (or, for an existing device ID of the
// same user, to give a new token).
type NewDevice struct {
	DeviceID    string
	DisplayName *string
	TokenHash   string
	IP          string
}

// CreateAccount registers a user: ErrExists if the user ID is taken. It
// returns the account data stream position of the push rules (0 if none).
func (db *DB) CreateAccount(ctx context.Context, a NewAccount) (int64, error) {
	var pos int64
	err := db.Write(ctx, func(tx *Tx) error {
		now := time.Now().UnixMilli()
		res, err := tx.Exec(`INSERT INTO accounts (user_id, password_hash, displayname, created_ts) VALUES (?, ?, ?, ?)
			ON CONFLICT DO NOTHING`, a.UserID, a.PasswordHash, nullable(a.DisplayName), now)
		if err != nil {
			return fmt.Errorf("insert account: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrExists
		}
		if a.PushRules != nil {
			if pos, err = putAccountDataTx(tx, a.UserID, "", "m.push_rules", a.PushRules); err != nil {
				return err
			}
		}
		if a.Device != nil {
			if _, err := upsertDeviceTx(tx, a.UserID, *a.Device, now); err != nil {
				return err
			}
		}
		return nil
	})
	return pos, err
}

// putAccountDataTx is PutAccountData inside a write.
func putAccountDataTx(tx *Tx, userID, roomID, typ string, content []byte) (int64, error) {
	var pos int64
	if err := tx.QueryRow(`SELECT COALESCE(MAX(pos), 0) + 1 FROM account_data`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("account data position: %w", err)
	}
	_, err := tx.Exec(`INSERT INTO account_data (user_id, room_id, type, content, pos) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT DO UPDATE SET content = excluded.content, pos = excluded.pos`, userID, roomID, typ, content, pos)
	if err != nil {
		return 0, fmt.Errorf("put account data: %w", err)
	}
	return pos, nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// AccountExists says whether a user ID is registered here.
func (db *DB) AccountExists(ctx context.Context, userID string) (bool, error) {
	var one int
	err := db.QueryRow(ctx, `SELECT 1 FROM accounts WHERE user_id = ?`, userID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// PasswordHash returns a user's password hash (” when the account has no
// password), or ErrNotFound.
func (db *DB) PasswordHash(ctx context.Context, userID string) (string, error) {
	var h string
	err := db.QueryRow(ctx, `SELECT password_hash FROM accounts WHERE user_id = ?`, userID).Scan(&h)
	return h, notFound(err)
}

// SetPasswordHash changes a user's password. When logoutExcept is not nil,
// every device of the user but *logoutExcept (may be "") is deleted and
// their token hashes are returned so caches can forget them.
func (db *DB) SetPasswordHash(ctx context.Context, userID, hash string, logoutExcept *string) ([]string, error) {
	var gone []string
	err := db.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec(`UPDATE accounts SET password_hash = ? WHERE user_id = ?`, hash, userID)
		if err != nil {
			return fmt.Errorf("set password: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if logoutExcept == nil {
			return nil
		}
		ids, err := deviceIDsTx(tx, userID)
		if err != nil {
			return err
		}
		keep := ids[:0]
		for _, id := range ids {
			if id != *logoutExcept {
				keep = append(keep, id)
			}
		}
		gone, err = deleteDevicesTx(tx, userID, keep)
		return err
	})
	return gone, err
}

// Profile is a user's public profile.
type Profile struct {
	DisplayName string
	AvatarURL   string
}

// Profile returns a local user's profile, or ErrNotFound.
func (db *DB) Profile(ctx context.Context, userID string) (Profile, error) {
	var dn, av sql.NullString
	err := db.QueryRow(ctx, `SELECT displayname, avatar_url FROM accounts WHERE user_id = ?`, userID).Scan(&dn, &av)
	return Profile{DisplayName: dn.String, AvatarURL: av.String}, notFound(err)
}

// SetDisplayName sets (or with "" clears) a user's display name.
func (db *DB) SetDisplayName(ctx context.Context, userID, name string) error {
	return db.setProfileField(ctx, userID, "displayname", name)
}

// SetAvatarURL sets (or with "" clears) a user's avatar URL.
func (db *DB) SetAvatarURL(ctx context.Context, userID, url string) error {
	return db.setProfileField(ctx, userID, "avatar_url", url)
}

func (db *DB) setProfileField(ctx context.Context, userID, col, val string) error {
	return db.Write(ctx, func(tx *Tx) error {
		// col is one of two constants above, never caller input.
		res, err := tx.Exec(`UPDATE accounts SET `+col+` = ? WHERE user_id = ?`, nullable(val), userID)
		if err != nil {
			return fmt.Errorf("set %s: %w", col, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// Device is one of a user's devices.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName *string
	LastSeenTS  int64
	LastSeenIP  string
}

// CreateDevice creates a device for a user, or gives an existing device of
// theirs a new token (logging in again with a known device ID). It returns
// the token hash that was replaced, if any, so caches can forget it.
func (db *DB) CreateDevice(ctx context.Context, userID string, d NewDevice) (string, error) {
	var old string
	err := db.Write(ctx, func(tx *Tx) error {
		var err error
		old, err = upsertDeviceTx(tx, userID, d, time.Now().UnixMilli())
		return err
	})
	return old, err
}

func upsertDeviceTx(tx *Tx, userID string, d NewDevice, now int64) (string, error) {
	var old string
	err := tx.QueryRow(`SELECT token_hash FROM devices WHERE user_id = ? AND device_id = ?`, userID, d.DeviceID).Scan(&old)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("look up device: %w", err)
	}
	var name any
	if d.DisplayName != nil {
		name = *d.DisplayName
	}
	_, err = tx.Exec(`INSERT INTO devices (user_id, device_id, token_hash, display_name, created_ts, last_seen_ts, last_seen_ip)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (user_id, device_id) DO UPDATE SET token_hash = excluded.token_hash,
			display_name = COALESCE(excluded.display_name, display_name),
			last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip`,
		userID, d.DeviceID, d.TokenHash, name, now, now, d.IP)
	if err != nil {
		return "", fmt.Errorf("upsert device: %w", err)
	}
	return old, nil
}

// DeviceByToken returns the device an access token hash belongs to, or
// ErrNotFound.
func (db *DB) DeviceByToken(ctx context.Context, tokenHash string) (*Device, error) {
	return scanDevice(db.QueryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE token_hash = ?`, tokenHash))
}

// GetDevice returns one device of a user, or ErrNotFound.
func (db *DB) GetDevice(ctx context.Context, userID, deviceID string) (*Device, error) {
	return scanDevice(db.QueryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE user_id = ? AND device_id = ?`, userID, deviceID))
}

// Devices lists a user's devices by device ID.
func (db *DB) Devices(ctx context.Context, userID string) ([]Device, error) {
	rows, err := db.Query(ctx, `SELECT `+deviceCols+` FROM devices WHERE user_id = ? ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *d)
	}
	return out, rows.Err()
}

const deviceCols = `user_id, device_id, display_name, last_seen_ts, last_seen_ip`

func scanDevice(s scanner) (*Device, error) {
	d := &Device{}
	var name sql.NullString
	if err := s.Scan(&d.UserID, &d.DeviceID, &name, &d.LastSeenTS, &d.LastSeenIP); err != nil {
		return nil, notFound(err)
	}
	if name.Valid {
		d.DisplayName = &name.String
	}
	return d, nil
}

// SetDeviceName renames a device, or returns ErrNotFound.
func (db *DB) SetDeviceName(ctx context.Context, userID, deviceID, name string) error {
	return db.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec(`UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?`, name, userID, deviceID)
		if err != nil {
			return fmt.Errorf("rename device: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// DeleteDevices deletes devices of a user (all of them when deviceIDs is
// nil), with their keys, and returns their token hashes so caches can
// forget them. Unknown device IDs are skipped.
func (db *DB) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) ([]string, error) {
	var gone []string
	err := db.Write(ctx, func(tx *Tx) error {
		ids := deviceIDs
		if ids == nil {
			var err error
			if ids, err = deviceIDsTx(tx, userID); err != nil {
				return err
			}
		}
		var err error
		gone, err = deleteDevicesTx(tx, userID, ids)
		return err
	})
	return gone, err
}

func deviceIDsTx(tx *Tx, userID string) ([]string, error) {
	ids, err := scanStrings(tx.Query(`SELECT device_id FROM devices WHERE user_id = ?`, userID))
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return ids, nil
}

func deleteDevicesTx(tx *Tx, userID string, ids []string) ([]string, error) {
	var gone []string
	for _, id := range ids {
		var h string
		err := tx.QueryRow(`DELETE FROM devices WHERE user_id = ? AND device_id = ? RETURNING token_hash`, userID, id).Scan(&h)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("delete device: %w", err)
		}
		gone = append(gone, h)
		if _, err := tx.Exec(`DELETE FROM device_keys WHERE user_id = ? AND device_id = ?`, userID, id); err != nil {
			return nil, fmt.Errorf("delete device keys: %w", err)
		}
		if _, err := tx.Exec(`DELETE FROM one_time_keys WHERE user_id = ? AND device_id = ?`, userID, id); err != nil {
			return nil, fmt.Errorf("delete one-time keys: %w", err)
		}
	}
	return gone, nil
}

// ReserveRoomAlias holds an alias for a room being created: ErrExists if
// it is taken. Finish with SetRoomAlias, or DeleteRoomAlias on failure; a
// crash in between is cleaned up by MigrateAccounts.
func (db *DB) ReserveRoomAlias(ctx context.Context, alias, creator string) error {
	return db.CreateRoomAlias(ctx, alias, "", creator)
}

// CreateRoomAlias maps an alias to a room: ErrExists if it is taken.
func (db *DB) CreateRoomAlias(ctx context.Context, alias, roomID, creator string) error {
	return db.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec(`INSERT INTO room_aliases (alias, room_id, creator) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, alias, roomID, creator)
		if err != nil {
			return fmt.Errorf("create alias: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrExists
		}
		return nil
	})
}

// SetRoomAlias points a reserved alias at its room.
func (db *DB) SetRoomAlias(ctx context.Context, alias, roomID string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`UPDATE room_aliases SET room_id = ? WHERE alias = ?`, roomID, alias)
		if err != nil {
			return fmt.Errorf("set alias: %w", err)
		}
		return nil
	})
}

// RoomAlias returns the room an alias points to and who created the
// alias, or ErrNotFound (also for an alias still reserved).
func (db *DB) RoomAlias(ctx context.Context, alias string) (roomID, creator string, err error) {
	err = db.QueryRow(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = ? AND room_id != ''`, alias).Scan(&roomID, &creator)
	return roomID, creator, notFound(err)
}

// DeleteRoomAlias removes an alias, or returns ErrNotFound.
func (db *DB) DeleteRoomAlias(ctx context.Context, alias string) error {
	return db.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec(`DELETE FROM room_aliases WHERE alias = ?`, alias)
		if err != nil {
			return fmt.Errorf("delete alias: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// RoomAliases lists the local aliases of a room.
func (db *DB) RoomAliases(ctx context.Context, roomID string) ([]string, error) {
	return db.strings(ctx, `SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias`, roomID)
}

// SetRoomPublic lists a room in (or removes it from) the public directory.
func (db *DB) SetRoomPublic(ctx context.Context, roomID string, public bool) error {
	return db.Write(ctx, func(tx *Tx) error {
		q := `DELETE FROM room_directory WHERE room_id = ?`
		if public {
			q = `INSERT INTO room_directory (room_id) VALUES (?) ON CONFLICT DO NOTHING`
		}
		if _, err := tx.Exec(q, roomID); err != nil {
			return fmt.Errorf("set room visibility: %w", err)
		}
		return nil
	})
}

// RoomPublic says whether a room is in the public directory.
func (db *DB) RoomPublic(ctx context.Context, roomID string) (bool, error) {
	var one int
	err := db.QueryRow(ctx, `SELECT 1 FROM room_directory WHERE room_id = ?`, roomID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// PublicRoomIDs lists the rooms in the public directory.
func (db *DB) PublicRoomIDs(ctx context.Context) ([]string, error) {
	return db.strings(ctx, `SELECT room_id FROM room_directory ORDER BY room_id`)
}

// ForgetRoom records that a user forgot a room they left; sync leaves it
// out of their "leave" section until they join it again.
func (db *DB) ForgetRoom(ctx context.Context, userID, roomID string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`INSERT INTO forgotten_rooms (user_id, room_id) VALUES (?, ?) ON CONFLICT DO NOTHING`, userID, roomID)
		if err != nil {
			return fmt.Errorf("forget room: %w", err)
		}
		return nil
	})
}

// UnforgetRoom clears ForgetRoom (the user joined again).
func (db *DB) UnforgetRoom(ctx context.Context, userID, roomID string) error {
	return db.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`DELETE FROM forgotten_rooms WHERE user_id = ? AND room_id = ?`, userID, roomID)
		if err != nil {
			return fmt.Errorf("unforget room: %w", err)
		}
		return nil
	})
}

// ForgottenRooms lists the rooms a user forgot.
func (db *DB) ForgottenRooms(ctx context.Context, userID string) ([]string, error) {
	return db.strings(ctx, `SELECT room_id FROM forgotten_rooms WHERE user_id = ?`, userID)
}

func (db *DB) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	return scanStrings(db.Query(ctx, q, args...))
}

// scanStrings reads every row of a one-column query for strings.
func scanStrings(rows *sql.Rows, err error) ([]string, error) {
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// OneTimeKey is an uploaded one-time or fallback key.
type OneTimeKey struct {
	KeyID     string // "algorithm:id"
	Algorithm string
	Key       []byte
}

// PutDeviceKeys stores a device's identity keys (deviceKeys may be nil)
// and adds one-time and fallback keys. New fallback keys replace the
// device's old ones of the same algorithm. It returns the device's unused
// one-time key count per algorithm.
func (db *DB) PutDeviceKeys(ctx context.Context, userID, deviceID string, deviceKeys []byte, otks, fallback []OneTimeKey) (map[string]int, error) {
	counts := map[string]int{}
	err := db.Write(ctx, func(tx *Tx) error {
		if deviceKeys != nil {
			if _, err := tx.Exec(`INSERT INTO device_keys (user_id, device_id, keys) VALUES (?, ?, ?)
				ON CONFLICT DO UPDATE SET keys = excluded.keys`, userID, deviceID, deviceKeys); err != nil {
				return fmt.Errorf("put device keys: %w", err)
			}
		}
		for _, k := range fallback {
			if _, err := tx.Exec(`DELETE FROM one_time_keys WHERE user_id = ? AND device_id = ? AND fallback = 1 AND algorithm = ?`,
				userID, deviceID, k.Algorithm); err != nil {
				return fmt.Errorf("replace fallback key: %w", err)
			}
		}
		for i, set := range [][]OneTimeKey{otks, fallback} {
			for _, k := range set {
				if _, err := tx.Exec(`INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, fallback, key) VALUES (?, ?, ?, ?, ?, ?)
					ON CONFLICT DO NOTHING`, userID, deviceID, k.KeyID, k.Algorithm, i, k.Key); err != nil {
					return fmt.Errorf("put one-time key: %w", err)
				}
			}
		}
		rows, err := tx.Query(`SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = ? AND device_id = ? AND fallback = 0 GROUP BY algorithm`, userID, deviceID)
		if err != nil {
			return fmt.Errorf("count one-time keys: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var alg string
			var n int
			if err := rows.Scan(&alg, &n); err != nil {
				return err
			}
			counts[alg] = n
		}
		return rows.Err()
	})
	return counts, err
}

// DeviceKeys returns the identity keys of a user's devices by device ID
// (all devices when deviceIDs is empty).
func (db *DB) DeviceKeys(ctx context.Context, userID string, deviceIDs []string) (map[string][]byte, error) {
	q := `SELECT device_id, keys FROM device_keys WHERE user_id = ?`
	args := []any{userID}
	if len(deviceIDs) > 0 {
		// json_each keeps this one prepared statement for any count.
		ids, err := json.Marshal(deviceIDs)
		if err != nil {
			return nil, fmt.Errorf("device keys: %w", err)
		}
		q += ` AND device_id IN (SELECT value FROM json_each(?))`
		args = append(args, string(ids))
	}
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("query device keys: %w", err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var id string
		var k []byte
		if err := rows.Scan(&id, &k); err != nil {
			return nil, err
		}
		out[id] = k
	}
	return out, rows.Err()
}

// ClaimOneTimeKey takes one one-time key of an algorithm from a device,
// falling back to its fallback key (which stays). ErrNotFound if neither.
func (db *DB) ClaimOneTimeKey(ctx context.Context, userID, deviceID, algorithm string) (OneTimeKey, error) {
	var k OneTimeKey
	err := db.Write(ctx, func(tx *Tx) error {
		var fallback int
		err := tx.QueryRow(`SELECT key_id, key, fallback FROM one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?
			ORDER BY fallback, key_id LIMIT 1`, userID, deviceID, algorithm).Scan(&k.KeyID, &k.Key, &fallback)
		if err != nil {
			return notFound(err)
		}
		k.Algorithm = algorithm
		if fallback == 1 {
			return nil
		}
		_, err = tx.Exec(`DELETE FROM one_time_keys WHERE user_id = ? AND device_id = ? AND fallback = 0 AND key_id = ?`, userID, deviceID, k.KeyID)
		if err != nil {
			return fmt.Errorf("claim one-time key: %w", err)
		}
		return nil
	})
	return k, err
}

// FallbackKeyAlgorithms lists the algorithms a device has a fallback
// key for.
func (db *DB) FallbackKeyAlgorithms(ctx context.Context, userID, deviceID string) ([]string, error) {
	return db.strings(ctx, `SELECT DISTINCT algorithm FROM one_time_keys WHERE user_id = ? AND device_id = ? AND fallback = 1`, userID, deviceID)
}

// OneTimeKeyCounts returns a device's unused one-time key count per
// algorithm.
func (db *DB) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	rows, err := db.Query(ctx, `SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = ? AND device_id = ? AND fallback = 0 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("count one-time keys: %w", err)
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		counts[alg] = n
	}
	return counts, rows.Err()
}
