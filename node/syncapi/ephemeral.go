package syncapi

import (
	"encoding/json"
	"slices"
	"sort"
	"strconv"

	"hearth/node/storage"
)

// The /sync sections of the ephemeral streams.

// joinedEntry returns the response's entry for a joined room, creating an
// empty one (for a room with only ephemeral or account data news). A
// room the response shows as left gets none.
func (res *syncResponse) joinedEntry(roomID string) *joinedRoom {
	if jr := res.Rooms.Join[roomID]; jr != nil {
		return jr
	}
	if _, left := res.Rooms.Leave[roomID]; left {
		return nil
	}
	jr := &joinedRoom{
		State:       newEventList(),
		Timeline:    timeline{Events: []json.RawMessage{}},
		Ephemeral:   newEventList(),
		AccountData: newEventList(),
	}
	res.Rooms.Join[roomID] = jr
	return jr
}

// ephemeral adds the typing and receipt changes of the user's joined
// rooms between two tokens.
func (rd *reader) ephemeral(res *syncResponse, req *syncRequest, since, to Token, joined []string) error {
	f := req.filter
	ef := &f.Room.Ephemeral
	wantTyping, wantReceipts := ef.allowsType("m.typing"), ef.allowsType("m.receipt")
	if (!wantTyping || since.Typing >= to.Typing) && (!wantReceipts || since.Receipt >= to.Receipt) {
		return nil
	}
	rooms := make([]string, 0, len(joined))
	for _, id := range joined {
		if f.Room.allowsRoom(id) && ef.allowsRoom(id) {
			rooms = append(rooms, id)
		}
	}
	if len(rooms) == 0 {
		return nil
	}
	ignored, err := rd.ignoredUsers()
	if err != nil {
		return err
	}
	if wantTyping {
		for id, users := range rd.s.typing.changed(rooms, since.Typing) {
			users = slices.DeleteFunc(users, func(u string) bool { return ignored[u] || !ef.allowsSender(u) })
			if jr := res.joinedEntry(id); jr != nil {
				b, _ := json.Marshal(struct {
					Content struct {
						UserIDs []string `json:"user_ids"`
					} `json:"content"`
					Type string `json:"type"`
				}{Content: struct {
					UserIDs []string `json:"user_ids"`
				}{users}, Type: "m.typing"})
				jr.Ephemeral.Events = append(jr.Ephemeral.Events, b)
			}
		}
	}
	if wantReceipts && since.Receipt < to.Receipt {
		rs, err := rd.snap.ReceiptsOf(rooms, since.Receipt, to.Receipt, rd.user)
		if err != nil {
			return err
		}
		rs = slices.DeleteFunc(rs, func(r storage.Receipt) bool { return !ef.allowsSender(r.UserID) })
		evs, err := receiptEvents(rs, ignored)
		if err != nil {
			return err
		}
		for id, ev := range evs {
			if jr := res.joinedEntry(id); jr != nil {
				jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
			}
		}
	}
	return nil
}

// presenceSection adds the presence of users sharing a room with the user (and
// their own) that changed after since.
func (rd *reader) presenceSection(res *syncResponse, req *syncRequest, since int64) error {
	pf := &req.filter.Presence
	if !pf.allowsType("m.presence") {
		return nil
	}
	changed := rd.s.presence.changedSince(since)
	if len(changed) == 0 {
		return nil
	}
	ignored, err := rd.ignoredUsers()
	if err != nil {
		return err
	}
	others := make([]string, 0, len(changed))
	for u := range changed {
		if u != rd.user && !ignored[u] && pf.allowsSender(u) {
			others = append(others, u)
		}
	}
	users, err := rd.sharing(others)
	if err != nil {
		return err
	}
	if _, ok := changed[rd.user]; ok && pf.allowsSender(rd.user) {
		users = append(users, rd.user)
	}
	sort.Strings(users)
	if limit := pf.limit(len(users)); len(users) > limit {
		users = users[:limit]
	}
	for _, u := range users {
		b := make([]byte, 0, 160)
		b = append(b, `{"content":`...)
		b = appendPresence(b, changed[u])
		b = append(b, `,"sender":`...)
		b = appendString(b, u)
		b = append(b, `,"type":"m.presence"}`...)
		res.Presence.Events = append(res.Presence.Events, b)
	}
	return nil
}

// appendPresence writes an m.presence event's content (also the answer
// of GET /presence/{userId}/status).
func appendPresence(b []byte, p PresenceStatus) []byte {
	b = append(b, `{"currently_active":`...)
	b = strconv.AppendBool(b, p.CurrentlyActive)
	if p.LastActiveAgo > 0 || p.Presence != "offline" {
		b = append(b, `,"last_active_ago":`...)
		b = strconv.AppendInt(b, p.LastActiveAgo, 10)
	}
	b = append(b, `,"presence":`...)
	b = appendString(b, p.Presence)
	if p.StatusMsg != "" {
		b = append(b, `,"status_msg":`...)
		b = appendString(b, p.StatusMsg)
	}
	return append(b, '}')
}

// PresenceContent is a user's presence as GET /presence answers it, if
// this node knows it.
func (s *Syncer) PresenceContent(userID string) (json.RawMessage, bool) {
	p, ok := s.PresenceOf(userID)
	if !ok {
		return nil, false
	}
	return appendPresence(nil, p), true
}
