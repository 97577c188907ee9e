package edu

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/syncapi"
)

// The relay as sync's Outbound: each local change becomes an EDU queued
// for the servers that care — a room's other servers for typing and
// receipts, the servers of all the user's rooms for presence and device
// lists, the target's server for to-device messages.

var _ syncapi.Outbound = (*Relay)(nil)

func edu(typ string, content any) (gomatrixserverlib.EDU, error) {
	b, err := json.Marshal(content)
	if err != nil {
		return gomatrixserverlib.EDU{}, fmt.Errorf("edu: encode %s: %w", typ, err)
	}
	return gomatrixserverlib.EDU{Type: typ, Content: spec.RawJSON(b)}, nil
}

// Typing queues an m.typing EDU for the room's other servers.
func (r *Relay) Typing(roomID, userID string, typing bool) {
	r.later("m.typing", func(ctx context.Context) {
		e, err := edu("m.typing", typingContent{RoomID: roomID, UserID: userID, Typing: typing})
		if err != nil {
			r.log.Warn("typing EDU", "err", err)
			return
		}
		r.send(ctx, e, r.roomServers(ctx, roomID))
	})
}

// Receipt queues an m.receipt EDU for the room's other servers.
func (r *Relay) Receipt(roomID, userID, receiptType, eventID, threadID string, ts int64) {
	r.later("m.receipt", func(ctx context.Context) {
		content := map[string]map[string]map[string]userReceipt{roomID: {receiptType: {userID: {
			EventIDs: []string{eventID}, Data: receiptData{TS: ts, ThreadID: threadID},
		}}}}
		e, err := edu("m.receipt", content)
		if err != nil {
			r.log.Warn("receipt EDU", "err", err)
			return
		}
		r.send(ctx, e, r.roomServers(ctx, roomID))
	})
}

// Presence queues an m.presence EDU for the servers of the user's rooms.
func (r *Relay) Presence(userID string, p syncapi.PresenceStatus, rooms []string) {
	r.later("m.presence", func(ctx context.Context) {
		e, err := edu("m.presence", presenceContent{Push: []presenceUpdate{{
			UserID: userID, Presence: p.Presence, StatusMsg: p.StatusMsg,
			LastActiveAgo: p.LastActiveAgo, CurrentlyActive: p.CurrentlyActive,
		}}})
		if err != nil {
			r.log.Warn("presence EDU", "err", err)
			return
		}
		r.send(ctx, e, r.roomServers(ctx, rooms...))
	})
}

// DeviceList queues an m.device_list_update EDU per device for the
// servers of the user's rooms.
func (r *Relay) DeviceList(userID string, deviceIDs []string, deleted bool, streamID int64, rooms []string) {
	r.later("m.device_list_update", func(ctx context.Context) {
		dests := r.roomServers(ctx, rooms...)
		for _, d := range deviceIDs {
			e, err := edu("m.device_list_update", deviceListUpdate{
				UserID: userID, DeviceID: d, StreamID: streamID, PrevID: []int64{}, Deleted: deleted,
			})
			if err != nil {
				r.log.Warn("device list EDU", "err", err)
				return
			}
			r.send(ctx, e, dests)
		}
	})
}

// ToDevice queues an m.direct_to_device EDU for one server and returns
// once it is durably queued.
func (r *Relay) ToDevice(ctx context.Context, server string, msg syncapi.DirectToDevice) error {
	fed := r.federation()
	if fed == nil {
		return nil
	}
	e, err := edu("m.direct_to_device", msg)
	if err != nil {
		return err
	}
	if err := fed.SendEDU(ctx, e, server); err != nil {
		return fmt.Errorf("edu: to-device for %s: %w", server, err)
	}
	return nil
}

// The EDU contents, as the Server-Server API spells them.

type typingContent struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
	Typing bool   `json:"typing"`
}

type userReceipt struct {
	EventIDs []string    `json:"event_ids"`
	Data     receiptData `json:"data"`
}

type receiptData struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

type presenceContent struct {
	Push []presenceUpdate `json:"push"`
}

type presenceUpdate struct {
	UserID          string `json:"user_id"`
	Presence        string `json:"presence"`
	StatusMsg       string `json:"status_msg,omitempty"`
	LastActiveAgo   int64  `json:"last_active_ago"`
	CurrentlyActive bool   `json:"currently_active"`
}

type deviceListUpdate struct {
	UserID   string  `json:"user_id"`
	DeviceID string  `json:"device_id"`
	StreamID int64   `json:"stream_id"`
	PrevID   []int64 `json:"prev_id"`
	Deleted  bool    `json:"deleted,omitempty"`
}
