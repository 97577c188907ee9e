package roomserver

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/storage"
)

// Roomserver is the node's room state machine.
type Roomserver struct {
	db  *storage.DB
	cfg Config
}

// New opens the roomserver on db, migrating its tables.
func New(db *storage.DB, cfg Config) (*Roomserver, error) {
	if err := db.MigrateRooms(); err != nil {
		return nil, err
	}
	return &Roomserver{db: db, cfg: cfg}, nil
}

// Close stops the room workers.
func (rs *Roomserver) Close() {}

var errTODO = errors.New("roomserver: not implemented yet")

// CreateRoom creates a room of the given version (DefaultRoomVersion if
// empty): the create event with createContent (the creator is filled in
// where the version needs it), then evs in order, atomically.
func (rs *Roomserver) CreateRoom(ctx context.Context, version gomatrixserverlib.RoomVersion, creator string, createContent json.RawMessage, evs []NewEvent) (string, error) {
	return "", errTODO
}

// Send builds, authorises and stores events in a room, in order and
// atomically, returning their IDs once committed.
func (rs *Roomserver) Send(ctx context.Context, roomID string, evs ...NewEvent) ([]string, error) {
	return nil, errTODO
}

// RoomVersion returns a room's version, or ErrRoomNotFound.
func (rs *Roomserver) RoomVersion(ctx context.Context, roomID string) (gomatrixserverlib.RoomVersion, error) {
	return "", errTODO
}

// CurrentState returns a room's current state events.
func (rs *Roomserver) CurrentState(ctx context.Context, roomID string) ([]gomatrixserverlib.PDU, error) {
	return nil, errTODO
}

// StateEvent returns one current state event, or nil if there is none.
func (rs *Roomserver) StateEvent(ctx context.Context, roomID, eventType, stateKey string) (gomatrixserverlib.PDU, error) {
	return nil, errTODO
}

// Membership returns a user's current membership of a room ("leave" when
// they never had one).
func (rs *Roomserver) Membership(ctx context.Context, roomID, userID string) (string, error) {
	return "", errTODO
}

// RoomsWithMembership lists the rooms where a user's membership is m.
func (rs *Roomserver) RoomsWithMembership(ctx context.Context, userID, membership string) ([]string, error) {
	return nil, errTODO
}

// Event returns an event by ID, or ErrEventNotFound. Rejected events are
// not found.
func (rs *Roomserver) Event(ctx context.Context, eventID string) (gomatrixserverlib.PDU, error) {
	return nil, errTODO
}

// StateAfter returns the room state after an event.
func (rs *Roomserver) StateAfter(ctx context.Context, eventID string) ([]gomatrixserverlib.PDU, error) {
	return nil, errTODO
}
