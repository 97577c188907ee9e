package syncapi

import "encoding/json"

// The /sync response. Sections a client expects are always present, even
// when empty (matrix-js-sdk reads them without checking).
type syncResponse struct {
	NextBatch   string      `json:"next_batch"`
	Rooms       roomsPart   `json:"rooms"`
	AccountData eventList   `json:"account_data"`
	Presence    eventList   `json:"presence"`
	ToDevice    eventList   `json:"to_device"`
	DeviceLists deviceLists `json:"device_lists"`
	// OneTimeKeyCounts and FallbackKeyTypes are the requesting device's.
	OneTimeKeyCounts map[string]int `json:"device_one_time_keys_count"`
	FallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

type roomsPart struct {
	Join   map[string]*joinedRoom  `json:"join"`
	Invite map[string]*invitedRoom `json:"invite"`
	Leave  map[string]*leftRoom    `json:"leave"`
	Knock  map[string]*knockedRoom `json:"knock"`
}

// eventList is {"events": [...]}, never null.
type eventList struct {
	Events []json.RawMessage `json:"events"`
}

func newEventList() eventList { return eventList{Events: []json.RawMessage{}} }

type deviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

type timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

type joinedRoom struct {
	State       eventList            `json:"state"`
	Timeline    timeline             `json:"timeline"`
	Ephemeral   eventList            `json:"ephemeral"`
	AccountData eventList            `json:"account_data"`
	Unread      *unreadNotifications `json:"unread_notifications,omitempty"`
}

type unreadNotifications struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}

type leftRoom struct {
	State       eventList `json:"state"`
	Timeline    timeline  `json:"timeline"`
	AccountData eventList `json:"account_data"`
}

type invitedRoom struct {
	InviteState eventList `json:"invite_state"`
}

type knockedRoom struct {
	KnockState eventList `json:"knock_state"`
}

func newSyncResponse() *syncResponse {
	return &syncResponse{
		Rooms: roomsPart{
			Join:   map[string]*joinedRoom{},
			Invite: map[string]*invitedRoom{},
			Leave:  map[string]*leftRoom{},
			Knock:  map[string]*knockedRoom{},
		},
		AccountData: newEventList(),
		Presence:    newEventList(),
		ToDevice:    newEventList(),
		DeviceLists: deviceLists{Changed: []string{}, Left: []string{}},

		OneTimeKeyCounts: map[string]int{},
		FallbackKeyTypes: []string{},
	}
}

// empty reports whether the response has nothing for the client, so a
// long-poll should keep waiting.
func (r *syncResponse) empty() bool {
	return len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Leave) == 0 &&
		len(r.Rooms.Knock) == 0 && len(r.AccountData.Events) == 0 && len(r.Presence.Events) == 0 &&
		len(r.ToDevice.Events) == 0 && len(r.DeviceLists.Changed) == 0 && len(r.DeviceLists.Left) == 0
}

func rawList(bs [][]byte) []json.RawMessage {
	out := make([]json.RawMessage, len(bs))
	for i, b := range bs {
		out[i] = b
	}
	return out
}
