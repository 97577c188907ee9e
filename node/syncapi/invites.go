package syncapi

import (
	"encoding/json"
	"fmt"

	"hearth/node/storage"
)

// strippedTypes are the state events an invited (or knocking) user sees
// of a room before joining it.
var strippedTypes = []string{
	"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
	"m.room.encryption", "m.room.canonical_alias", "m.room.topic",
}

// invited adds an invited (section "invite") or knocking ("knock") room:
// the stripped state of the room and the user's own member event. A room
// this node is not in (a federated invite) has no local state: the invite
// event's unsigned.invite_room_state, from the inviting server, is used.
func (rd *reader) invited(res *syncResponse, rm roomInfo, ur storage.UserRoom, section string) error {
	types, err := rd.typeNIDs(strippedTypes)
	if err != nil {
		return err
	}
	keys, err := rd.snap.KeyNIDs([]string{""})
	if err != nil {
		return fmt.Errorf("syncapi: empty state key: %w", err)
	}
	var emptyKey int64
	for n := range keys {
		emptyKey = n
	}
	typeNIDs := make([]int64, 0, len(types))
	for _, n := range types {
		typeNIDs = append(typeNIDs, n)
	}
	entries, err := rd.snap.CurrentStateTypes(rm.nid, emptyKey, typeNIDs)
	if err != nil {
		return fmt.Errorf("syncapi: invite state: %w", err)
	}
	nids := make([]int64, 0, len(entries)+1)
	for _, e := range entries {
		nids = append(nids, e.EventNID)
	}
	evs, err := rd.events(rm, append(nids, ur.EventNID))
	if err != nil {
		return err
	}
	list := newEventList()
	var own *event
	for _, ev := range evs {
		if ev.NID == ur.EventNID {
			own = ev
			continue
		}
		list.Events = append(list.Events, ev.stripped())
	}
	if own != nil && section == "invite" {
		// An invite from an ignored user is not delivered at all.
		ignored, err := rd.ignoredUsers()
		if err != nil {
			return err
		}
		if ignored[own.Sender] {
			return nil
		}
	}
	if own != nil {
		if len(entries) == 0 {
			list.Events = append(list.Events, inviteRoomState(own)...)
		}
		list.Events = append(list.Events, own.JSON)
	}
	if section == "knock" {
		res.Rooms.Knock[rm.id] = &knockedRoom{KnockState: list}
	} else {
		res.Rooms.Invite[rm.id] = &invitedRoom{InviteState: list}
	}
	return nil
}

// inviteRoomState returns the stripped state a remote server attached to
// an invite (unsigned.invite_room_state), keeping only well-formed
// objects.
func inviteRoomState(ev *event) []json.RawMessage {
	var m struct {
		Unsigned struct {
			State []json.RawMessage `json:"invite_room_state"`
			Knock []json.RawMessage `json:"knock_room_state"`
		} `json:"unsigned"`
	}
	if json.Unmarshal(ev.JSON, &m) != nil {
		return nil
	}
	var out []json.RawMessage
	for _, s := range append(m.Unsigned.State, m.Unsigned.Knock...) {
		var probe struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(s, &probe) == nil && probe.Type != "" {
			out = append(out, s)
		}
	}
	return out
}
