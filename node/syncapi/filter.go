package syncapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Filter is the spec's sync filter (POST /user/{userId}/filter). Sync
// honours all of it but unread_thread_notifications, which is parsed and
// validated so stored filters need no migration when it is. event_format
// and event_fields are applied in eventshape.go, include_redundant_members
// in lazysent.go.
type Filter struct {
	EventFields []string    `json:"event_fields,omitempty"`
	EventFormat string      `json:"event_format,omitempty"`
	Presence    EventFilter `json:"presence"`
	AccountData EventFilter `json:"account_data"`
	Room        RoomFilter  `json:"room"`
}

// RoomFilter selects rooms and what of them a sync returns.
type RoomFilter struct {
	Rooms        *[]string       `json:"rooms,omitempty"`
	NotRooms     []string        `json:"not_rooms,omitempty"`
	IncludeLeave bool            `json:"include_leave,omitempty"`
	Timeline     RoomEventFilter `json:"timeline"`
	State        RoomEventFilter `json:"state"`
	Ephemeral    RoomEventFilter `json:"ephemeral"`
	AccountData  RoomEventFilter `json:"account_data"`
}

// EventFilter selects events by type and sender. A nil list allows all;
// an empty list allows none. Types may use '*' as a wildcard.
type EventFilter struct {
	Limit      *int      `json:"limit,omitempty"`
	Types      *[]string `json:"types,omitempty"`
	NotTypes   []string  `json:"not_types,omitempty"`
	Senders    *[]string `json:"senders,omitempty"`
	NotSenders []string  `json:"not_senders,omitempty"`
}

// RoomEventFilter is an EventFilter for room events.
type RoomEventFilter struct {
	EventFilter
	Rooms                     *[]string `json:"rooms,omitempty"`
	NotRooms                  []string  `json:"not_rooms,omitempty"`
	ContainsURL               *bool     `json:"contains_url,omitempty"`
	LazyLoadMembers           bool      `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool      `json:"include_redundant_members,omitempty"`
	UnreadThreadNotifications bool      `json:"unread_thread_notifications,omitempty"`
}

// maxFilterLimit bounds any limit a filter or query asks for.
const maxFilterLimit = 1000

// ParseFilter decodes and validates a filter: the client API can call it
// to refuse a bad filter at upload time with the same rules sync applies.
func ParseFilter(b []byte) (*Filter, error) {
	var f Filter
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return nil, errors.New("filter: event_format must be client or federation")
	}
	for _, ef := range []*EventFilter{&f.Presence, &f.AccountData, &f.Room.Timeline.EventFilter,
		&f.Room.State.EventFilter, &f.Room.Ephemeral.EventFilter, &f.Room.AccountData.EventFilter} {
		if ef.Limit != nil && *ef.Limit < 0 {
			return nil, errors.New("filter: limit must not be negative")
		}
	}
	return &f, nil
}

// ParseRoomEventFilter decodes the filter parameter of /messages and
// /context.
func ParseRoomEventFilter(b []byte) (*RoomEventFilter, error) {
	var f RoomEventFilter
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	if f.Limit != nil && *f.Limit < 0 {
		return nil, errors.New("filter: limit must not be negative")
	}
	return &f, nil
}

// limit returns the filter's limit, def when unset, capped.
func (f *EventFilter) limit(def int) int {
	if f.Limit == nil || *f.Limit == 0 {
		return def
	}
	return min(*f.Limit, maxFilterLimit)
}

// allowsType reports whether an event type passes types/not_types.
func (f *EventFilter) allowsType(typ string) bool {
	for _, p := range f.NotTypes {
		if globMatch(p, typ) {
			return false
		}
	}
	if f.Types == nil {
		return true
	}
	for _, p := range *f.Types {
		if globMatch(p, typ) {
			return true
		}
	}
	return false
}

// allowsSender reports whether a sender passes senders/not_senders.
func (f *EventFilter) allowsSender(sender string) bool {
	return allowsID(f.Senders, f.NotSenders, sender)
}

// allows reports whether an event of this type and sender passes.
func (f *EventFilter) allows(typ, sender string) bool {
	return f.allowsType(typ) && f.allowsSender(sender)
}

// allowsRoom reports whether a room passes rooms/not_rooms.
func (f *RoomEventFilter) allowsRoom(roomID string) bool {
	return allowsID(f.Rooms, f.NotRooms, roomID)
}

// allowsEvent applies every per-event condition of the filter.
func (f *RoomEventFilter) allowsEvent(ev *event) bool {
	if !f.allows(ev.Type, ev.Sender) {
		return false
	}
	if f.ContainsURL != nil && *f.ContainsURL != ev.HasURL {
		return false
	}
	return true
}

// selective reports whether the filter may drop events at all, so the
// unfiltered (common) case can skip looking.
func (f *RoomEventFilter) selective() bool {
	return f.Types != nil || len(f.NotTypes) > 0 || f.Senders != nil || len(f.NotSenders) > 0 || f.ContainsURL != nil
}

// allowsRoom reports whether the top-level room filter lets a room in.
func (f *RoomFilter) allowsRoom(roomID string) bool {
	return allowsID(f.Rooms, f.NotRooms, roomID)
}

func allowsID(allow *[]string, deny []string, id string) bool {
	for _, d := range deny {
		if d == id {
			return false
		}
	}
	if allow == nil {
		return true
	}
	for _, a := range *allow {
		if a == id {
			return true
		}
	}
	return false
}

// globMatch matches s against a pattern where '*' stands for any run of
// characters (the spec's only wildcard).
func globMatch(pattern, s string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == s
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last)
}
