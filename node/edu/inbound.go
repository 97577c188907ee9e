package edu

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/syncapi"
)

// OnEDU takes in an EDU another server sent (federation's Config.OnEDU).
// A server speaks only for its own users: anything about a user of
// another server is dropped, as is typing or a receipt from a user not
// joined to the room. To-device messages and receipts are stored before
// it returns, so the transaction that carried them is acknowledged only
// once they are durable.
func (r *Relay) OnEDU(origin string, e gomatrixserverlib.EDU) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	var err error
	switch e.Type {
	case "m.typing":
		err = r.onTyping(ctx, origin, e.Content)
	case "m.receipt":
		err = r.onReceipt(ctx, origin, e.Content)
	case "m.presence":
		err = r.onPresence(origin, e.Content)
	case "m.direct_to_device":
		err = r.onToDevice(ctx, origin, e.Content)
	case "m.device_list_update", "m.signing_key_update":
		err = r.onDeviceList(ctx, origin, e.Content)
	default:
		return
	}
	if err != nil {
		r.log.Warn("inbound EDU", "origin", origin, "type", e.Type, "err", err)
	}
}

// owns reports whether userID belongs to server.
func owns(server, userID string) bool {
	return strings.HasPrefix(userID, "@") && strings.HasSuffix(userID, ":"+server) &&
		!strings.Contains(strings.TrimSuffix(userID, ":"+server), ":")
}

func (r *Relay) onTyping(ctx context.Context, origin string, content []byte) error {
	var c typingContent
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	if !owns(origin, c.UserID) {
		return nil
	}
	joined, err := r.sync.IsJoined(ctx, c.RoomID, c.UserID)
	if err != nil || !joined {
		return err
	}
	r.sync.ReceiveTyping(c.RoomID, c.UserID, c.Typing)
	return nil
}

func (r *Relay) onReceipt(ctx context.Context, origin string, content []byte) error {
	var c map[string]map[string]map[string]userReceipt
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	for roomID, types := range c {
		for typ, users := range types {
			if typ != "m.read" { // private receipts never leave their server
				continue
			}
			for userID, rc := range users {
				if !owns(origin, userID) || len(rc.EventIDs) == 0 {
					continue
				}
				evID := rc.EventIDs[len(rc.EventIDs)-1]
				if !strings.HasPrefix(evID, "$") {
					continue
				}
				if err := r.sync.ReceiveReceipt(ctx, roomID, userID, evID, rc.Data.ThreadID, rc.Data.TS); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (r *Relay) onPresence(origin string, content []byte) error {
	var c presenceContent
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	for _, p := range c.Push {
		if !owns(origin, p.UserID) {
			continue
		}
		r.sync.ReceivePresence(p.UserID, syncapi.PresenceStatus{
			Presence: p.Presence, StatusMsg: p.StatusMsg, LastActiveAgo: p.LastActiveAgo, CurrentlyActive: p.CurrentlyActive,
		})
	}
	return nil
}

func (r *Relay) onToDevice(ctx context.Context, origin string, content []byte) error {
	var m syncapi.DirectToDevice
	if err := json.Unmarshal(content, &m); err != nil {
		return err
	}
	if !owns(origin, m.Sender) || m.Type == "" {
		return nil
	}
	return r.sync.ReceiveToDevice(ctx, origin, m)
}

func (r *Relay) onDeviceList(ctx context.Context, origin string, content []byte) error {
	var c struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	if !owns(origin, c.UserID) {
		return nil
	}
	return r.sync.ReceiveDeviceListUpdate(ctx, c.UserID)
}
