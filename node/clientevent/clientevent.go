// Package clientevent turns room events (PDUs) into the Client-Server
// API's ClientEvent JSON. Both the client API and sync use it, so it sits
// apart from them; it sits on the /sync hot path, so it copies raw JSON
// (content, unsigned) instead of decoding and re-encoding it. It imports
// only gomatrixserverlib and must not import any other hearth package.
package clientevent

import (
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Event is the spec's ClientEvent. Sync's timeline form (no room_id) is
// the same value with RoomID cleared.
type Event struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id,omitempty"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	// Redacts is kept at the top level for redactions of every room
	// version (from v11 on it also sits in content), as clients still
	// read it there.
	Redacts  string          `json:"redacts,omitempty"`
	Unsigned json.RawMessage `json:"unsigned,omitempty"`
}

var emptyObject = json.RawMessage(`{}`)

// Format converts ev. roomID is the room it belongs to; when empty it is
// read from the event (a room v12 create event carries no room_id: its
// room ID derives from its event ID, which ev.RoomID() knows).
//
// The event's unsigned object is passed through as stored: a redacted
// event's unsigned.redacted_because is whatever the roomserver recorded
// when it applied the redaction.
func Format(ev gomatrixserverlib.PDU, roomID string) Event {
	if roomID == "" {
		roomID = ev.RoomID().String()
	}
	content := json.RawMessage(ev.Content())
	if len(content) == 0 {
		content = emptyObject
	}
	e := Event{
		Content:        content,
		EventID:        ev.EventID(),
		OriginServerTS: int64(ev.OriginServerTS()),
		RoomID:         roomID,
		Sender:         string(ev.SenderID()),
		StateKey:       ev.StateKey(),
		Type:           ev.Type(),
		Redacts:        ev.Redacts(),
	}
	if u := ev.Unsigned(); len(u) > 0 && string(u) != "{}" {
		e.Unsigned = u
	}
	if e.Redacts == "" && e.Type == spec.MRoomRedaction {
		var c struct {
			Redacts string `json:"redacts"`
		}
		if json.Unmarshal(content, &c) == nil {
			e.Redacts = c.Redacts
		}
	}
	return e
}

// FormatAll converts events of one room (roomID as in Format).
func FormatAll(evs []gomatrixserverlib.PDU, roomID string) []Event {
	out := make([]Event, len(evs))
	for i, ev := range evs {
		out[i] = Format(ev, roomID)
	}
	return out
}

// TxnDevice is the key the client API gives roomserver.NewEvent.TxnDevice
// for a send from a device: transaction IDs are scoped to one device of
// one user, and device IDs are only unique per user. Sync uses it to find
// the transaction_id to echo to the sending device.
func TxnDevice(userID, deviceID string) string {
	return userID + "|" + deviceID
}
