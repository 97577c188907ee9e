package syncapi

import (
	"context"
	"encoding/json"
	"fmt"

	"hearth/node/storage"
)

// Read receipts are stored (storage.PutReceipt); each new one takes the
// next position of the receipt stream and wakes the room's long-polls, or
// only its owner's for an m.read.private receipt, which nobody else sees.

// OnReceipt stores a local user's receipt (the client API has checked
// the type and that they are joined) and sends a public one to the
// room's other servers. Failures are logged: the hook has no answer.
func (s *Syncer) OnReceipt(roomID, userID, receiptType, eventID, threadID string) {
	s.active(userID)
	ts := nowMS()
	r := storage.Receipt{RoomID: roomID, UserID: userID, Type: receiptType, ThreadID: threadID, EventID: eventID, TS: ts}
	pos, err := s.putReceipt(context.Background(), r)
	if err != nil {
		s.log.Error("syncapi: storing a receipt", "room", roomID, "user", userID, "err", err)
		return
	}
	if o := s.outbound(); o != nil && pos != 0 && receiptType == "m.read" {
		o.Receipt(roomID, userID, receiptType, eventID, threadID, ts)
	}
}

// ReceiveReceipt stores a remote user's public read receipt from their
// server's EDU. The caller has checked the user belongs to the sending
// server; they must also be joined to the room.
func (s *Syncer) ReceiveReceipt(ctx context.Context, roomID, userID, eventID, threadID string, ts int64) error {
	joined, err := s.IsJoined(ctx, roomID, userID)
	if err != nil || !joined {
		return err
	}
	_, err = s.putReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: userID, Type: "m.read", ThreadID: threadID, EventID: eventID, TS: ts})
	return err
}

func (s *Syncer) putReceipt(ctx context.Context, r storage.Receipt) (int64, error) {
	pos, err := s.db.PutReceipt(ctx, r)
	if err != nil || pos == 0 {
		return 0, err
	}
	advance := func(t *Token) { t.Receipt = max(t.Receipt, pos) }
	if r.Type == "m.read.private" {
		s.notify.notify(userKey(r.UserID), advance)
	} else {
		s.notify.notify(roomKey(r.RoomID), advance)
	}
	return pos, nil
}

// receiptEvents groups receipts into one m.receipt event per room:
// {"$event": {"m.read": {"@user": {"ts": ..., "thread_id": ...}}}}.
// Receipts of ignored users are left out.
func receiptEvents(rs []storage.Receipt, ignored map[string]bool) (map[string]json.RawMessage, error) {
	type receipt struct {
		TS       int64  `json:"ts"`
		ThreadID string `json:"thread_id,omitempty"`
	}
	byRoom := map[string]map[string]map[string]map[string]receipt{}
	for _, r := range rs {
		if ignored[r.UserID] {
			continue
		}
		evs := byRoom[r.RoomID]
		if evs == nil {
			evs = map[string]map[string]map[string]receipt{}
			byRoom[r.RoomID] = evs
		}
		types := evs[r.EventID]
		if types == nil {
			types = map[string]map[string]receipt{}
			evs[r.EventID] = types
		}
		users := types[r.Type]
		if users == nil {
			users = map[string]receipt{}
			types[r.Type] = users
		}
		users[r.UserID] = receipt{TS: r.TS, ThreadID: r.ThreadID}
	}
	out := make(map[string]json.RawMessage, len(byRoom))
	for room, content := range byRoom {
		b, err := json.Marshal(struct {
			Content any    `json:"content"`
			Type    string `json:"type"`
		}{content, "m.receipt"})
		if err != nil {
			return nil, fmt.Errorf("syncapi: encode receipts: %w", err)
		}
		out[room] = b
	}
	return out, nil
}
