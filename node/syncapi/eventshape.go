package syncapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// The filter options that change how each event is written rather than
// which events are sent: event_format and event_fields. Both run only
// when a filter asks for them, so the common sync pays nothing.

// federationFormat reports whether the filter asks for events as PDUs.
func (f *Filter) federationFormat() bool { return f.EventFormat == "federation" }

// federationEvents returns evs in the federation format: the stored PDU
// JSON, with room_id added where the room version leaves it out. The
// stored JSON is read again rather than kept in the event cache, which
// would double its memory for a format few clients ask for.
func (rd *reader) federationEvents(rm roomInfo, evs []*event) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, len(evs))
	if len(evs) == 0 {
		return out, nil
	}
	nids := make([]int64, len(evs))
	for i, ev := range evs {
		nids[i] = ev.NID
	}
	rows, err := rd.snap.EventsByNID(nids)
	if err != nil {
		return nil, fmt.Errorf("syncapi: federation format: %w", err)
	}
	byNID := make(map[int64][]byte, len(rows))
	for i := range rows {
		byNID[rows[i].NID] = rows[i].JSON
	}
	for i, ev := range evs {
		pdu, ok := byNID[ev.NID]
		if !ok || len(pdu) < 2 || pdu[0] != '{' {
			out[i] = ev.JSON // cannot happen for an event just read; never send nothing
			continue
		}
		out[i] = withRoomID(pdu, rm.id)
	}
	return out, nil
}

// withRoomID returns pdu with a top-level room_id, adding it if missing.
func withRoomID(pdu []byte, roomID string) []byte {
	has := false
	eachField(pdu, func(k, _ []byte) bool {
		has = string(k) == `"room_id"`
		return !has
	})
	if has {
		return pdu
	}
	b := make([]byte, 0, len(pdu)+len(roomID)+16)
	b = append(b, `{"room_id":`...)
	b = appendString(b, roomID)
	if rest := bytes.TrimSpace(pdu[1:]); len(rest) > 0 && rest[0] != '}' {
		b = append(b, ',')
	}
	return append(b, pdu[1:]...)
}

// fieldTree is the parsed event_fields: the paths to keep, as a tree of
// field names. A leaf keeps its whole value.
type fieldTree map[string]fieldTree

// parseEventFields splits each dotted path into field names: "\." is a
// literal dot and "\\" a literal backslash, as the spec says.
func parseEventFields(paths []string) fieldTree {
	root := fieldTree{}
	for _, p := range paths {
		var parts []string
		var cur strings.Builder
		for i := 0; i < len(p); i++ {
			switch c := p[i]; {
			case c == '\\' && i+1 < len(p) && (p[i+1] == '.' || p[i+1] == '\\'):
				cur.WriteByte(p[i+1])
				i++
			case c == '.':
				parts = append(parts, cur.String())
				cur.Reset()
			default:
				cur.WriteByte(c)
			}
		}
		parts = append(parts, cur.String())
		node := root
		for i, name := range parts {
			child, seen := node[name]
			if seen && child == nil {
				break // a shorter path already keeps the whole value
			}
			if i == len(parts)-1 {
				node[name] = nil
				break
			}
			if child == nil {
				child = fieldTree{}
				node[name] = child
			}
			node = child
		}
	}
	return root
}

// project keeps only the fields of obj (a JSON object) the tree names.
// Like Synapse, a path that leads nowhere adds nothing, not even the
// objects on the way to it.
func (t fieldTree) project(obj []byte) []byte {
	out, ok := t.pick(obj)
	if !ok {
		return obj // not an object: nothing to select in
	}
	b, err := json.Marshal(out)
	if err != nil {
		return obj
	}
	return b
}

// pick returns the selected fields of obj; ok is false when obj is not
// a JSON object.
func (t fieldTree) pick(obj []byte) (map[string]any, bool) {
	var m map[string]json.RawMessage
	if len(obj) == 0 || obj[0] != '{' || json.Unmarshal(obj, &m) != nil {
		return nil, false
	}
	out := make(map[string]any, len(t))
	for name, sub := range t {
		v, ok := m[name]
		if !ok {
			continue
		}
		if sub == nil {
			out[name] = v
			continue
		}
		if inner, ok := sub.pick(v); ok && len(inner) > 0 {
			out[name] = inner
		}
	}
	return out, true
}

// applyEventFields reduces every event of the response that a filter's
// event_fields applies to: timeline, state, ephemeral and account data
// events of rooms, and global account data and presence.
func (res *syncResponse) applyEventFields(paths []string) {
	if len(paths) == 0 { // absent (or empty): all fields, as Synapse does
		return
	}
	t := parseEventFields(paths)
	each := func(evs []json.RawMessage) {
		for i, e := range evs {
			evs[i] = t.project(e)
		}
	}
	for _, jr := range res.Rooms.Join {
		each(jr.Timeline.Events)
		each(jr.State.Events)
		each(jr.Ephemeral.Events)
		each(jr.AccountData.Events)
	}
	for _, lr := range res.Rooms.Leave {
		each(lr.Timeline.Events)
		each(lr.State.Events)
		each(lr.AccountData.Events)
	}
	each(res.AccountData.Events)
	each(res.Presence.Events)
}

// applyLimits enforces the limit of the filters whose sections are not
// built with one: each room's ephemeral and account data events, and the
// global account data.
func (res *syncResponse) applyLimits(f *Filter) {
	cut := func(l *eventList, ef *EventFilter) {
		if n := ef.limit(len(l.Events)); len(l.Events) > n {
			l.Events = l.Events[:n]
		}
	}
	if f.Room.Ephemeral.Limit != nil || f.Room.AccountData.Limit != nil {
		for _, jr := range res.Rooms.Join {
			cut(&jr.Ephemeral, &f.Room.Ephemeral.EventFilter)
			cut(&jr.AccountData, &f.Room.AccountData.EventFilter)
		}
		for _, lr := range res.Rooms.Leave {
			cut(&lr.AccountData, &f.Room.AccountData.EventFilter)
		}
	}
	if f.AccountData.Limit != nil {
		cut(&res.AccountData, &f.AccountData)
	}
}
