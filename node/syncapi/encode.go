package syncapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
)

// Responses are written by hand: their events are JSON this package made
// (or stored, canonical JSON), and encoding/json would re-validate and
// re-compact every byte of them — more work than reading them from the
// database. The shapes are the structs in response.go.

func appendEvents(b []byte, evs []json.RawMessage) []byte {
	n := 2 + len(evs)
	for _, e := range evs {
		n += len(e)
	}
	b = slices.Grow(b, n)
	b = append(b, '[')
	for i, e := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, ']')
}

func appendEventList(b []byte, l eventList) []byte {
	b = append(b, `{"events":`...)
	b = appendEvents(b, l.Events)
	return append(b, '}')
}

func appendTimeline(b []byte, t timeline) []byte {
	b = append(b, `{"events":`...)
	b = appendEvents(b, t.Events)
	b = append(b, `,"limited":`...)
	b = strconv.AppendBool(b, t.Limited)
	if t.PrevBatch != "" {
		b = append(b, `,"prev_batch":`...)
		b = appendString(b, t.PrevBatch)
	}
	return append(b, '}')
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendRooms writes one rooms section: {"!id": {...}, ...}.
func appendRooms[R any](b []byte, m map[string]R, room func([]byte, R) []byte) []byte {
	b = append(b, '{')
	first := true
	for id, r := range m {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, id)
		b = append(b, ':')
		b = room(b, r)
	}
	return append(b, '}')
}

func (r *syncResponse) appendJSON(b []byte) []byte {
	b = append(b, `{"next_batch":`...)
	b = appendString(b, r.NextBatch)
	b = append(b, `,"rooms":{"join":`...)
	b = appendRooms(b, r.Rooms.Join, func(b []byte, j *joinedRoom) []byte {
		b = append(b, `{"state":`...)
		b = appendEventList(b, j.State)
		b = append(b, `,"timeline":`...)
		b = appendTimeline(b, j.Timeline)
		b = append(b, `,"ephemeral":`...)
		b = appendEventList(b, j.Ephemeral)
		b = append(b, `,"account_data":`...)
		b = appendEventList(b, j.AccountData)
		if u := j.Unread; u != nil {
			b = append(b, `,"unread_notifications":{"notification_count":`...)
			b = strconv.AppendInt(b, int64(u.Notifications), 10)
			b = append(b, `,"highlight_count":`...)
			b = strconv.AppendInt(b, int64(u.Highlights), 10)
			b = append(b, '}')
		}
		return append(b, '}')
	})
	b = append(b, `,"invite":`...)
	b = appendRooms(b, r.Rooms.Invite, func(b []byte, i *invitedRoom) []byte {
		b = append(b, `{"invite_state":`...)
		b = appendEventList(b, i.InviteState)
		return append(b, '}')
	})
	b = append(b, `,"leave":`...)
	b = appendRooms(b, r.Rooms.Leave, func(b []byte, l *leftRoom) []byte {
		b = append(b, `{"state":`...)
		b = appendEventList(b, l.State)
		b = append(b, `,"timeline":`...)
		b = appendTimeline(b, l.Timeline)
		b = append(b, `,"account_data":`...)
		b = appendEventList(b, l.AccountData)
		return append(b, '}')
	})
	b = append(b, `,"knock":`...)
	b = appendRooms(b, r.Rooms.Knock, func(b []byte, k *knockedRoom) []byte {
		b = append(b, `{"knock_state":`...)
		b = appendEventList(b, k.KnockState)
		return append(b, '}')
	})
	b = append(b, `},"account_data":`...)
	b = appendEventList(b, r.AccountData)
	b = append(b, `,"presence":`...)
	b = appendEventList(b, r.Presence)
	b = append(b, `,"to_device":`...)
	b = appendEventList(b, r.ToDevice)
	b = append(b, `,"device_lists":{"changed":`...)
	b = appendStrings(b, r.DeviceLists.Changed)
	b = append(b, `,"left":`...)
	b = appendStrings(b, r.DeviceLists.Left)
	b = append(b, `},"device_one_time_keys_count":{`...)
	algs := make([]string, 0, len(r.OneTimeKeyCounts))
	for alg := range r.OneTimeKeyCounts {
		algs = append(algs, alg)
	}
	slices.Sort(algs)
	for i, alg := range algs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, alg)
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(r.OneTimeKeyCounts[alg]), 10)
	}
	b = append(b, `},"device_unused_fallback_key_types":`...)
	b = appendStrings(b, r.FallbackKeyTypes)
	return append(b, '}')
}

func (r *messagesResponse) appendJSON(b []byte) []byte {
	b = append(b, `{"chunk":`...)
	b = appendEvents(b, r.Chunk)
	b = append(b, `,"start":`...)
	b = appendString(b, r.Start)
	if r.End != "" {
		b = append(b, `,"end":`...)
		b = appendString(b, r.End)
	}
	if len(r.State) > 0 {
		b = append(b, `,"state":`...)
		b = appendEvents(b, r.State)
	}
	return append(b, '}')
}

func (r *contextResponse) appendJSON(b []byte) []byte {
	b = append(b, `{"event":`...)
	b = append(b, r.Event...)
	b = append(b, `,"events_before":`...)
	b = appendEvents(b, r.EventsBefore)
	b = append(b, `,"events_after":`...)
	b = appendEvents(b, r.EventsAfter)
	b = append(b, `,"start":`...)
	b = appendString(b, r.Start)
	b = append(b, `,"end":`...)
	b = appendString(b, r.End)
	b = append(b, `,"state":`...)
	b = appendEvents(b, r.State)
	return append(b, '}')
}

// writeRaw answers 200 with a body encoded by one of the above.
func writeRaw(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}
