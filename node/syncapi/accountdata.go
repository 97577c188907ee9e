package syncapi

import (
	"encoding/json"
	"fmt"
	"slices"
)

// accountData adds the user's account data changed in (after, upto]: all
// of it for an initial or full-state sync. Room account data goes to the
// room's entry, creating one for a joined room that has no other news.
func (rd *reader) accountData(res *syncResponse, req *syncRequest, after, upto int64, joined []string) error {
	if req.since == nil || req.fullState {
		after = 0
	}
	if after >= upto { // nothing new: upto is the user's newest
		return nil
	}
	items, err := rd.snap.AccountDataSince(rd.user, after, upto)
	if err != nil {
		return fmt.Errorf("syncapi: account data: %w", err)
	}
	f := req.filter
	for _, it := range items {
		if !json.Valid(it.Content) {
			continue
		}
		b := make([]byte, 0, len(it.Content)+len(it.Type)+24)
		b = append(b, `{"content":`...)
		b = append(b, it.Content...)
		b = append(b, `,"type":`...)
		b = appendString(b, it.Type)
		b = append(b, '}')
		if it.RoomID == "" {
			if f.AccountData.allowsType(it.Type) {
				res.AccountData.Events = append(res.AccountData.Events, b)
			}
			continue
		}
		rf := &f.Room.AccountData
		if !f.Room.allowsRoom(it.RoomID) || !rf.allowsRoom(it.RoomID) || !rf.allowsType(it.Type) {
			continue
		}
		if jr := res.Rooms.Join[it.RoomID]; jr != nil {
			jr.AccountData.Events = append(jr.AccountData.Events, b)
		} else if lr := res.Rooms.Leave[it.RoomID]; lr != nil {
			lr.AccountData.Events = append(lr.AccountData.Events, b)
		} else if slices.Contains(joined, it.RoomID) {
			res.Rooms.Join[it.RoomID] = &joinedRoom{
				State:       newEventList(),
				Timeline:    timeline{Events: []json.RawMessage{}},
				Ephemeral:   newEventList(),
				AccountData: eventList{Events: []json.RawMessage{b}},
			}
		}
	}
	return nil
}
