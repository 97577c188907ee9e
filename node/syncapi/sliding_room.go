package syncapi

import (
	"encoding/json"
	"slices"
	"strings"

	"hearth/node/storage"
)

// The sliding sync response.
type slidingResponse struct {
	Pos        string                       `json:"pos"`
	Lists      map[string]slidingListResult `json:"lists"`
	Rooms      map[string]*slidingRoom      `json:"rooms"`
	Extensions map[string]any               `json:"extensions"`
	// news is set when an extension carried something a long-poll must
	// return for.
	news bool
	// token is the streams' positions the answer is up to, and sent what
	// the connection holds once the client has it.
	token Token
	sent  sentRooms
}

type slidingListResult struct {
	Count int `json:"count"`
}

type slidingHero struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
}

type slidingRoom struct {
	Name              string            `json:"name,omitempty"`
	Heroes            []slidingHero     `json:"heroes,omitempty"`
	Initial           bool              `json:"initial,omitempty"`
	RequiredState     []json.RawMessage `json:"required_state,omitempty"`
	Timeline          []json.RawMessage `json:"timeline,omitempty"`
	PrevBatch         string            `json:"prev_batch,omitempty"`
	Limited           bool              `json:"limited"`
	JoinedCount       int               `json:"joined_count"`
	InvitedCount      int               `json:"invited_count"`
	NotificationCount int               `json:"notification_count"`
	HighlightCount    int               `json:"highlight_count"`
	BumpStamp         int64             `json:"bump_stamp"`
	InviteState       []json.RawMessage `json:"invite_state,omitempty"`
}

func newSlidingResponse() *slidingResponse {
	return &slidingResponse{
		Lists:      map[string]slidingListResult{},
		Rooms:      map[string]*slidingRoom{},
		Extensions: map[string]any{},
	}
}

// empty reports whether a long-poll should keep waiting.
func (r *slidingResponse) empty() bool { return len(r.Rooms) == 0 && !r.news }

// stateMatcher matches state events against required_state entries.
type stateMatcher struct {
	pairs    [][]string
	lazy     bool // "$LAZY" members: the timeline's senders
	wildcard bool // some entry needs the whole state
}

func newStateMatcher(req [][]string) *stateMatcher {
	m := &stateMatcher{pairs: req}
	for _, p := range req {
		if p[0] == "*" || p[1] == "*" {
			m.wildcard = true
		}
		if p[0] == "m.room.member" && p[1] == "$LAZY" {
			m.lazy = true
		}
	}
	return m
}

func (m *stateMatcher) matches(ev *event, me string, senders map[string]bool) bool {
	if ev.StateKey == nil {
		return false
	}
	key := *ev.StateKey
	for _, p := range m.pairs {
		if p[0] != "*" && p[0] != ev.Type {
			continue
		}
		switch p[1] {
		case "*":
			return true
		case "$ME":
			if key == me {
				return true
			}
		case "$LAZY":
			if ev.Type == "m.room.member" && senders[key] {
				return true
			}
		default:
			if p[1] == key {
				return true
			}
		}
	}
	return false
}

// slidingRoom builds one room's entry: from scratch when initial (the
// connection was never sent the room, or the user's membership changed
// since), else what changed since since, the position it was sent up to.
func (rd *reader) slidingRoom(ur storage.UserRoom, p *roomParams, had bool, since int64) (*slidingRoom, error) {
	rm := roomInfo{ur.RoomNID, ur.RoomID, ur.Version}
	initial := !had || ur.Pos > since
	sr := &slidingRoom{Initial: initial, BumpStamp: ur.LatestPos}
	if ur.Membership == "invite" {
		scratch := newSyncResponse()
		if err := rd.invited(scratch, rm, ur, "invite"); err != nil {
			return nil, err
		}
		ir := scratch.Rooms.Invite[rm.id]
		if ir == nil {
			return nil, nil
		}
		sr.InviteState = ir.InviteState.Events
		sr.Name = strippedName(ir.InviteState.Events)
		return sr, nil
	}

	// The timeline: the newest events after pos (or at all), as /sync's.
	after := int64(0)
	if !initial {
		after = since
	}
	acc := &access{membership: "join", pos: ur.Pos, shared: true, limit: rd.readPos}
	window, evs, more, err := rd.scan(rm, after, rd.readPos, true, p.TimelineLimit, nil)
	if err != nil {
		return nil, err
	}
	slices.Reverse(evs)
	if evs, err = rd.readable(rm, acc, evs); err != nil {
		return nil, err
	}
	tjson, err := rd.withTxnIDs(rm, evs)
	if err != nil {
		return nil, err
	}
	sr.Timeline = rawList(tjson)
	sr.Limited = more
	if len(window) > 0 {
		sr.PrevBatch = pageToken(window[len(window)-1].Pos - 1)
	} else if more {
		sr.PrevBatch = pageToken(rd.readPos)
	}
	senders := map[string]bool{rd.user: true}
	for _, ev := range evs {
		senders[ev.Sender] = true
	}

	// The room's current state: only the entries required_state, the
	// name and the heroes need; the member counts come from the
	// memberships table. A room's cost does not grow with its size
	// unless required_state asks for all of it.
	m := newStateMatcher(p.RequiredState)
	entries, err := rd.slidingState(rm, m, senders)
	if err != nil {
		return nil, err
	}
	var changed map[stateKey]bool // nil: send all that matches
	if !initial {
		keys, all, err := rd.changedKeys(rm, since, rd.readPos+1)
		if err != nil {
			return nil, err
		}
		if !all {
			changed = keys
		}
	}
	nids := make([]int64, 0, len(entries))
	for _, e := range entries {
		nids = append(nids, e.EventNID)
	}
	slices.Sort(nids)
	nids = slices.Compact(nids)
	stateEvs, err := rd.events(rm, nids)
	if err != nil {
		return nil, err
	}
	keyOf := make(map[int64]stateKey, len(entries))
	for _, e := range entries {
		keyOf[e.EventNID] = stateKey{e.TypeNID, e.KeyNID}
	}
	var name, alias string
	for _, ev := range stateEvs {
		if m.matches(ev, rd.user, senders) && (changed == nil || changed[keyOf[ev.NID]]) {
			sr.RequiredState = append(sr.RequiredState, ev.JSON)
		}
		switch {
		case ev.Type == "m.room.name" && ev.StateKey != nil && *ev.StateKey == "":
			name = contentString(ev, "name")
		case ev.Type == "m.room.canonical_alias" && ev.StateKey != nil && *ev.StateKey == "":
			alias = contentString(ev, "alias")
		}
	}
	if sr.JoinedCount, sr.InvitedCount, err = rd.snap.MemberCounts(rm.nid); err != nil {
		return nil, err
	}
	switch {
	case name != "":
		sr.Name = name
	case alias != "":
		sr.Name = alias
	default:
		if sr.Heroes, err = rd.heroes(rm); err != nil {
			return nil, err
		}
		names := make([]string, len(sr.Heroes))
		for i, h := range sr.Heroes {
			names[i] = h.DisplayName
			if names[i] == "" {
				names[i] = h.UserID
			}
		}
		sr.Name = strings.Join(names, ", ")
	}
	if sr.NotificationCount, sr.HighlightCount, err = rd.unreadCounts(rm, ur); err != nil {
		return nil, err
	}
	return sr, nil
}

// contentString reads a string field of an event's content.
func contentString(ev *event, field string) string {
	var e struct {
		Content map[string]any `json:"content"`
	}
	if json.Unmarshal(ev.JSON, &e) != nil {
		return ""
	}
	s, _ := e.Content[field].(string)
	return s
}

// strippedName is the m.room.name in an invite's stripped state.
func strippedName(evs []json.RawMessage) string {
	for _, b := range evs {
		var e struct {
			Type    string `json:"type"`
			Content struct {
				Name string `json:"name"`
			} `json:"content"`
		}
		if json.Unmarshal(b, &e) == nil && e.Type == "m.room.name" {
			return e.Content.Name
		}
	}
	return ""
}
