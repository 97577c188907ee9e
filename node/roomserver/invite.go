package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/storage"
)

// StoreInvite records an invite of a local user to a room this server is
// not in (a federated invite, PUT /invite). The invite, already checked
// and signed by both servers, is stored as an outlier (no state), gets a
// stream position, and the invitee's membership becomes "invite", so
// /sync lists the room under "invite" with strippedState (the inviting
// server's invite_room_state, kept in the event's
// unsigned.invite_room_state). A room this server is in (it holds the
// state and has a user joined) gets the invite through /send like any
// other event: then, and for an invite already stored, StoreInvite stores
// nothing and returns false.
func (rs *Roomserver) StoreInvite(ctx context.Context, version gomatrixserverlib.RoomVersion, invite gomatrixserverlib.PDU, strippedState []json.RawMessage) (bool, error) {
	if err := rs.checkOutOfRoom(invite, Invite); err != nil {
		return false, err
	}
	if len(strippedState) > 0 {
		var err error
		if invite, err = invite.SetUnsigned(map[string]any{"invite_room_state": strippedState}); err != nil {
			return false, &BadEventError{Reason: "invite_room_state: " + err.Error()}
		}
	}
	return rs.storeOutOfRoom(ctx, version, invite, Invite)
}

// StoreRemoteLeave records a local user's leave (a rejected or withdrawn
// invite, sent with make_leave/send_leave) of a room this server is not
// in, the way StoreInvite records the invite. For a room this server is
// in it stores nothing and returns false: such a leave goes through Send.
func (rs *Roomserver) StoreRemoteLeave(ctx context.Context, version gomatrixserverlib.RoomVersion, leave gomatrixserverlib.PDU) (bool, error) {
	if err := rs.checkOutOfRoom(leave, Leave); err != nil {
		return false, err
	}
	return rs.storeOutOfRoom(ctx, version, leave, Leave)
}

func (rs *Roomserver) checkOutOfRoom(ev gomatrixserverlib.PDU, want string) error {
	if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return &BadEventError{Reason: "not a membership event"}
	}
	if m, err := ev.Membership(); err != nil || m != want {
		return &BadEventError{Reason: "membership is not " + want}
	}
	u, err := spec.NewUserID(*ev.StateKey(), true)
	if err != nil || u.Domain() != rs.cfg.ServerName {
		return &BadEventError{Reason: "the target is not a user of this server"}
	}
	return nil
}

func (rs *Roomserver) storeOutOfRoom(ctx context.Context, version gomatrixserverlib.RoomVersion, ev gomatrixserverlib.PDU, membership string) (bool, error) {
	roomID := ev.RoomID().String()
	pending := pendingNIDs{}
	var out Output
	stored := false
	err := rs.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := storage.EventByIDTx(tx, ev.EventID()); err == nil {
			return nil // delivered before
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		roomNID, snapshotNID, err := storage.OutOfRoomTx(tx, roomID, string(version))
		if err != nil {
			return err
		}
		if snapshotNID != 0 {
			joined, err := storage.LocalJoinedTx(tx, roomNID, string(rs.cfg.ServerName))
			if err != nil {
				return err
			}
			if joined > 0 {
				return nil // we are in the room: the event comes through /send
			}
		}
		typeNID, err := rs.nids.typeNID(tx, pending, spec.MRoomMember)
		if err != nil {
			return err
		}
		keyNID, err := rs.nids.keyNID(tx, pending, *ev.StateKey())
		if err != nil {
			return err
		}
		pos, err := storage.NextStreamPos(tx)
		if err != nil {
			return err
		}
		nid, err := storage.InsertEvent(tx, &storage.Event{
			RoomNID: roomNID, ID: ev.EventID(), TypeNID: typeNID, KeyNID: keyNID,
			Depth: ev.Depth(), StreamPos: pos, JSON: ev.JSON(),
		})
		if err != nil {
			return err
		}
		if err := storage.AppendStreamAt(tx, pos, roomNID, nid, nil, nil); err != nil {
			return err
		}
		if err := storage.SetMembership(tx, *ev.StateKey(), roomNID, membership, nid, pos); err != nil {
			return err
		}
		out = Output{Pos: pos, RoomID: roomID, Event: ev, RoomNID: roomNID, EventNID: nid}
		stored = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("roomserver: store %s of %s: %w", membership, roomID, err)
	}
	rs.nids.commit(pending)
	if stored {
		rs.cfg.OnOutput([]Output{out})
	}
	return stored, nil
}
