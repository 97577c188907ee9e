package storage

import (
	"database/sql"
	"fmt"
)

// Sync's reads of its own tables, inside a SyncSnapshot.

// StreamPositions are the newest positions of the streams, as one
// snapshot sees them.
type StreamPositions struct {
	Room        int64 // the room stream's (MaxPos)
	AccountData int64 // the user's newest account data
	Receipt     int64
	ToDevice    int64 // high-water mark: deleted messages keep it
	DeviceList  int64
}

// Positions reads every stream's newest position for a user, in one
// statement.
func (ss *SyncSnapshot) Positions(userID string) (StreamPositions, error) {
	var p StreamPositions
	err := ss.stmt(stPositions).QueryRowContext(ss.ctx, userID).Scan(&p.Room, &p.AccountData, &p.Receipt, &p.ToDevice, &p.DeviceList)
	if err != nil {
		return p, fmt.Errorf("storage: stream positions: %w", err)
	}
	return p, nil
}

// KeyCounts returns a device's unused one-time keys per algorithm and
// the algorithms it has an unused fallback key for.
func (ss *SyncSnapshot) KeyCounts(userID, deviceID string) (otks map[string]int, fallback []string, err error) {
	rows, err := ss.stmt(stKeyCounts).QueryContext(ss.ctx, userID, deviceID)
	if err != nil {
		return nil, nil, fmt.Errorf("storage: key counts: %w", err)
	}
	defer rows.Close()
	otks = map[string]int{}
	for rows.Next() {
		var alg string
		var fb bool
		var n int
		if err := rows.Scan(&alg, &fb, &n); err != nil {
			return nil, nil, err
		}
		if fb {
			fallback = append(fallback, alg)
		} else {
			otks[alg] = n
		}
	}
	return otks, fallback, rows.Err()
}

// ReceiptsOf returns the receipts of rooms with after < pos <= upto;
// m.read.private receipts only of viewer. A short gap reads the newest
// receipts of every room and keeps those of rooms; a long one seeks each
// room.
func (ss *SyncSnapshot) ReceiptsOf(rooms []string, after, upto int64, viewer string) ([]Receipt, error) {
	if len(rooms) == 0 || after >= upto {
		return nil, nil
	}
	var rows *sql.Rows
	var err error
	var want map[string]bool
	if upto-after <= receiptTailMax {
		want = make(map[string]bool, len(rooms))
		for _, r := range rooms {
			want[r] = true
		}
		rows, err = ss.stmt(stReceiptsTail).QueryContext(ss.ctx, after, upto, viewer)
	} else {
		rows, err = ss.stmt(stReceiptsOfRooms).QueryContext(ss.ctx, jsonStrings(rooms), after, upto, viewer)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: receipts: %w", err)
	}
	defer rows.Close()
	var out []Receipt
	for rows.Next() {
		var r Receipt
		if err := rows.Scan(&r.RoomID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.TS); err != nil {
			return nil, err
		}
		if want == nil || want[r.RoomID] {
			out = append(out, r)
		}
	}
	return out, rows.Err()
}

// receiptTailMax is the longest receipt gap read from the stream's tail.
const receiptTailMax = 500

// OwnReadPos is the newest stream position a user's main-timeline read
// receipts (public or private) in a room point at (0: none).
func (ss *SyncSnapshot) OwnReadPos(roomID, userID string) (int64, error) {
	var p int64
	err := ss.stmt(stOwnReadPos).QueryRowContext(ss.ctx, roomID, userID).Scan(&p)
	return p, err
}

// ToDeviceRow is a stored to-device message.
type ToDeviceRow struct {
	Pos     int64
	Sender  string
	Type    string
	Content []byte
}

// ToDeviceSince returns up to limit of a device's messages with after <
// pos <= upto, oldest first, and whether more remain.
func (ss *SyncSnapshot) ToDeviceSince(userID, deviceID string, after, upto int64, limit int) ([]ToDeviceRow, bool, error) {
	rows, err := ss.stmt(stToDevice).QueryContext(ss.ctx, userID, deviceID, after, upto)
	if err != nil {
		return nil, false, fmt.Errorf("storage: to-device messages: %w", err)
	}
	defer rows.Close()
	var out []ToDeviceRow
	for rows.Next() {
		if len(out) == limit {
			return out, true, nil
		}
		var m ToDeviceRow
		if err := rows.Scan(&m.Pos, &m.Sender, &m.Type, &m.Content); err != nil {
			return nil, false, err
		}
		out = append(out, m)
	}
	return out, false, rows.Err()
}

// DeviceListChanges lists users whose devices changed with after < pos <=
// upto.
func (ss *SyncSnapshot) DeviceListChanges(after, upto int64) ([]string, error) {
	if after >= upto {
		return nil, nil
	}
	return ss.stringList(stDeviceListsSince, after, upto)
}

// Sharing returns those of users who share a joined room with userID.
func (ss *SyncSnapshot) Sharing(userID string, users []string) ([]string, error) {
	if len(users) == 0 {
		return nil, nil
	}
	return ss.stringList(stSharing, jsonStrings(users), userID)
}

// RoomJoined lists the users joined to a room.
func (ss *SyncSnapshot) RoomJoined(roomNID int64) ([]string, error) {
	return ss.stringList(stRoomJoined, roomNID)
}

// GlobalAccountData returns a user's global account data item of a type,
// or ErrNotFound.
func (ss *SyncSnapshot) GlobalAccountData(userID, typ string) ([]byte, error) {
	var c []byte
	err := ss.stmt(stGlobalAccountData).QueryRowContext(ss.ctx, userID, typ).Scan(&c)
	return c, notFound(err)
}

func (ss *SyncSnapshot) stringList(st syncStmt, args ...any) ([]string, error) {
	out, err := scanStrings(ss.stmt(st).QueryContext(ss.ctx, args...))
	if err != nil {
		return nil, fmt.Errorf("storage: sync query %d: %w", st, err)
	}
	return out, nil
}
