package storage

import (
	"errors"
	"fmt"
)

// OutOfRoomTx returns the NID and current state snapshot of a room inside
// a write, creating the room's row (with no state) if it is new. A
// snapshot of 0 means this server holds no state for the room: it is not
// in it, and knows it only through invites or leaves of its users
// (federated invites are stored this way, see roomserver.StoreInvite).
func OutOfRoomTx(tx *Tx, roomID, version string) (roomNID, snapshotNID int64, err error) {
	err = tx.QueryRow(`SELECT room_nid, snapshot_nid FROM rooms WHERE room_id = ?`, roomID).Scan(&roomNID, &snapshotNID)
	if err == nil {
		return roomNID, snapshotNID, nil
	}
	if !errors.Is(notFound(err), ErrNotFound) {
		return 0, 0, fmt.Errorf("storage: room %s: %w", roomID, err)
	}
	roomNID, err = InsertRoom(tx, roomID, version)
	return roomNID, 0, err
}

// LocalJoinedTx counts the users of server (user IDs ending in ":server")
// joined to a room, inside a write.
func LocalJoinedTx(tx *Tx, roomNID int64, server string) (int, error) {
	var n int
	suffix := ":" + server
	err := tx.QueryRow(`SELECT COUNT(*) FROM memberships WHERE room_nid = ? AND membership = 'join'
		AND substr(user_id, -length(?)) = ?`, roomNID, suffix, suffix).Scan(&n)
	return n, err
}
