package syncapi

import (
	"context"
	"encoding/json"
	"strings"
	"time"
)

// Outbound carries this node's ephemeral updates to other servers. The
// node's glue (node/edu) implements it over federation; without one,
// nothing leaves the node. Every method but ToDevice must return at once
// (queue, don't send); ToDevice returns once the messages are durably
// queued, because its caller acknowledges them to a client.
type Outbound interface {
	// Typing: a local user started or stopped typing in a room.
	Typing(roomID, userID string, typing bool)
	// Receipt: a local user's public read receipt.
	Receipt(roomID, userID, receiptType, eventID, threadID string, ts int64)
	// Presence: a local user's presence changed; rooms are the rooms they
	// are joined to (whose servers care).
	Presence(userID string, p PresenceStatus, rooms []string)
	// DeviceList: a local user's devices or keys changed, at stream
	// position streamID; rooms are the rooms they are joined to.
	DeviceList(userID string, deviceIDs []string, deleted bool, streamID int64, rooms []string)
	// ToDevice queues messages for users of one other server.
	ToDevice(ctx context.Context, server string, msg DirectToDevice) error
}

// DirectToDevice is one m.direct_to_device EDU's content.
type DirectToDevice struct {
	Sender    string                                `json:"sender"`
	Type      string                                `json:"type"`
	MessageID string                                `json:"message_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// SetOutbound installs the sender of EDUs (nil: none). Call it before
// serving requests.
func (s *Syncer) SetOutbound(o Outbound) {
	if o == nil {
		s.out.Store(nil)
		return
	}
	s.out.Store(&o)
}

func (s *Syncer) outbound() Outbound {
	if p := s.out.Load(); p != nil {
		return *p
	}
	return nil
}

// local reports whether a user belongs to this node.
func (s *Syncer) local(userID string) bool {
	return s.cfg.ServerName == "" || serverOf(userID) == s.cfg.ServerName
}

// serverOf is the server part of a user ID ("" if it has none).
func serverOf(userID string) string {
	if _, srv, ok := strings.Cut(userID, ":"); ok {
		return srv
	}
	return ""
}

// nowMS is the time in milliseconds since the epoch.
func nowMS() int64 { return time.Now().UnixMilli() }

// clockSeed starts an in-memory stream's positions from the clock, so
// they keep growing across restarts: a token from before a restart is
// older than anything after it, and its holder gets the current state.
func clockSeed() int64 { return time.Now().UnixMilli() }
