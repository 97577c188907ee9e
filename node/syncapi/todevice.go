package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"hearth/node/storage"
)

// To-device messages are stored per target device and delivered in its
// syncs' to_device section, oldest first, at most maxToDevice at a time.
// A message stays stored until the device syncs from a token past it:
// a response lost on the way is delivered again. Sends are idempotent: a
// client's (device, txn ID) and a server's message_id are taken in once.

// maxToDevice bounds the messages in one sync response.
const maxToDevice = 100

// toDeviceKeyTTL is how long send keys are kept for de-duplication.
const toDeviceKeyTTL = 24 * time.Hour

// SendToDevice sends a local device's to-device messages (messages: user
// → device ID or "*" → content): stored for this node's devices, queued
// through Outbound for other servers' users. It returns once both are
// durable; a repeated (sender, device, txnID) is a no-op.
func (s *Syncer) SendToDevice(ctx context.Context, sender, senderDevice, eventType, txnID string, messages map[string]map[string]json.RawMessage) error {
	var local []storage.ToDeviceMessage
	remote := map[string]map[string]map[string]json.RawMessage{}
	for user, devices := range messages {
		if !s.local(user) {
			srv := serverOf(user)
			if remote[srv] == nil {
				remote[srv] = map[string]map[string]json.RawMessage{}
			}
			remote[srv][user] = devices
			continue
		}
		for dev, content := range devices {
			local = append(local, storage.ToDeviceMessage{UserID: user, DeviceID: dev, Sender: sender, Type: eventType, Content: content})
		}
	}
	// Remote first, under a message_id derived from the transaction: if
	// the client retries, the other server drops what it already has.
	if o := s.outbound(); o != nil {
		msgID := storage.HashHex(sender, senderDevice, txnID)
		for srv, msgs := range remote {
			err := o.ToDevice(ctx, srv, DirectToDevice{Sender: sender, Type: eventType, MessageID: msgID, Messages: msgs})
			if err != nil {
				return fmt.Errorf("syncapi: to-device messages for %s: %w", srv, err)
			}
		}
	}
	return s.storeToDevice(ctx, storage.ToDeviceKey("txn", sender, senderDevice, txnID), local)
}

// ReceiveToDevice stores the messages of an m.direct_to_device EDU for
// this node's users. The caller has checked the sender belongs to origin.
// A message_id seen before from origin is dropped.
func (s *Syncer) ReceiveToDevice(ctx context.Context, origin string, m DirectToDevice) error {
	var local []storage.ToDeviceMessage
	for user, devices := range m.Messages {
		if !s.local(user) {
			continue
		}
		for dev, content := range devices {
			if !json.Valid(content) || len(content) == 0 || content[0] != '{' {
				continue
			}
			local = append(local, storage.ToDeviceMessage{UserID: user, DeviceID: dev, Sender: m.Sender, Type: m.Type, Content: content})
		}
	}
	var key []byte
	if m.MessageID != "" {
		key = storage.ToDeviceKey("msg", origin, m.MessageID)
	}
	return s.storeToDevice(ctx, key, local)
}

func (s *Syncer) storeToDevice(ctx context.Context, key []byte, msgs []storage.ToDeviceMessage) error {
	targets, _, err := s.db.PutToDevice(ctx, key, nowMS(), msgs)
	if err != nil {
		return fmt.Errorf("syncapi: %w", err)
	}
	for _, t := range targets {
		pos := t.Pos
		s.notify.notify(deviceKey(t.UserID, t.DeviceID), func(tk *Token) { tk.ToDevice = max(tk.ToDevice, pos) })
	}
	return nil
}

// toDevice adds a device's messages after since to the response and
// moves to.ToDevice back to the last one sent if more remain.
func (rd *reader) toDevice(res *syncResponse, since int64, to *Token) error {
	rows, more, err := rd.snap.ToDeviceSince(rd.user, rd.deviceID, since, to.ToDevice, maxToDevice)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return nil
	}
	if more {
		to.ToDevice = rows[len(rows)-1].Pos
	}
	ignored, err := rd.ignoredUsers()
	if err != nil {
		return err
	}
	for _, m := range rows {
		if ignored[m.Sender] || !json.Valid(m.Content) {
			continue
		}
		b := make([]byte, 0, len(m.Content)+len(m.Sender)+len(m.Type)+40)
		b = append(b, `{"content":`...)
		b = append(b, m.Content...)
		b = append(b, `,"sender":`...)
		b = appendString(b, m.Sender)
		b = append(b, `,"type":`...)
		b = appendString(b, m.Type)
		res.ToDevice.Events = append(res.ToDevice.Events, append(b, '}'))
	}
	rd.s.acks.sent(rd.user, rd.deviceID, rows[len(rows)-1].Pos)
	return nil
}

// toDeviceAcks remembers, per device, the newest message position a
// response carried and the newest position deleted, so a sync deletes
// only when its token acknowledges something new. A device not seen
// since start gets one delete, for what an earlier run delivered.
type toDeviceAcks struct {
	mu sync.Mutex
	m  map[string]ackState // user|device
}

type ackState struct{ delivered, acked int64 }

func newToDeviceAcks() *toDeviceAcks { return &toDeviceAcks{m: map[string]ackState{}} }

func (a *toDeviceAcks) sent(user, device string, pos int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := user + "|" + device
	st := a.m[k]
	st.delivered = max(st.delivered, pos)
	a.m[k] = st
}

// due reports whether a sync from since must delete messages, and
// records that it does.
func (a *toDeviceAcks) due(user, device string, since int64) bool {
	if since <= 0 {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	k := user + "|" + device
	st, seen := a.m[k]
	if seen && (since <= st.acked || st.delivered <= st.acked) {
		return false
	}
	if !seen && len(a.m) >= 100000 {
		clear(a.m) // forgetting costs one redundant delete per device
	}
	st.acked = since
	a.m[k] = st
	return true
}

// ackToDevice deletes what a sync's since token acknowledges. It runs
// outside any snapshot (it writes).
func (s *Syncer) ackToDevice(ctx context.Context, user, device string, since int64) {
	if !s.acks.due(user, device, since) {
		return
	}
	if err := s.db.AckToDevice(ctx, user, device, since); err != nil {
		s.log.Warn("syncapi: deleting acknowledged to-device messages", "user", user, "device", device, "err", err)
	}
}
