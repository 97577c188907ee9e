package syncapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"hearth/node/httputil"
	"hearth/node/storage"
)

type contextResponse struct {
	Event        json.RawMessage   `json:"event"`
	EventsBefore []json.RawMessage `json:"events_before"`
	EventsAfter  []json.RawMessage `json:"events_after"`
	Start        string            `json:"start"`
	End          string            `json:"end"`
	State        []json.RawMessage `json:"state"`
}

// HandleContext serves GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}:
// the event, up to limit/2 events before it (newest first) and the rest
// of limit after it, pagination tokens either side, and the room state at
// the last event returned.
func (s *Syncer) HandleContext(w http.ResponseWriter, r *http.Request) {
	dev := httputil.DeviceFrom(r.Context())
	if dev == nil {
		httputil.WriteError(w, r, httputil.MissingToken("missing access token"))
		return
	}
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"), defaultPageLimit)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if q.Get("limit") == "0" {
		limit = 0
	}
	f, err := parseEventFilterParam(q.Get("filter"))
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	rd, err := s.historyReader(r.Context(), dev)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	defer rd.close()
	rm, acc, err := rd.roomAccess(r.PathValue("roomId"))
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	limitPos := acc.limit
	notFound := httputil.NotFound("event not found")
	se, roomNID, rejected, err := rd.snap.EventByID(r.PathValue("eventId"))
	if errors.Is(err, storage.ErrNotFound) {
		httputil.WriteError(w, r, notFound)
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	// Only events in the room's stream that the user may read have a
	// context; outliers and rejected events have none.
	if roomNID != rm.nid || rejected || se.StreamPos == 0 || se.StreamPos > limitPos {
		httputil.WriteError(w, r, notFound)
		return
	}
	target := rd.event(rm, &se)
	if target == nil {
		httputil.WriteError(w, r, notFound)
		return
	}
	if ok, err := rd.canSee(rm, acc, target); err != nil || !ok {
		if err == nil {
			err = notFound
		}
		httputil.WriteError(w, r, err)
		return
	}
	nBefore := limit / 2
	nAfter := limit - nBefore
	var winBefore, winAfter []storage.StreamRow
	var before, after []*event
	if nBefore > 0 {
		if winBefore, before, _, err = rd.scan(rm, 0, se.StreamPos-1, true, nBefore, f); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	if nAfter > 0 {
		if winAfter, after, _, err = rd.scan(rm, se.StreamPos, limitPos, false, nAfter, f); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	// History visibility and ignored users thin the context; the tokens
	// still continue from the rows read.
	if before, err = rd.readable(rm, acc, before); err == nil {
		after, err = rd.readable(rm, acc, after)
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	res := contextResponse{Start: pageToken(se.StreamPos - 1), End: pageToken(se.StreamPos)}
	if len(winBefore) > 0 {
		res.Start = pageToken(winBefore[len(winBefore)-1].Pos - 1)
	}
	last := &se
	if len(winAfter) > 0 {
		res.End = pageToken(winAfter[len(winAfter)-1].Pos)
	}
	if n := len(after); n > 0 {
		for i := range winAfter {
			if winAfter[i].Event.NID == after[n-1].NID {
				last = &winAfter[i].Event
			}
		}
	}
	all := append(append([]*event{target}, before...), after...)
	js, err := rd.withTxnIDs(rm, all)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	res.Event = js[0]
	res.EventsBefore = rawList(js[1 : 1+len(before)])
	res.EventsAfter = rawList(js[1+len(before):])

	st, err := rd.stateAfterEvent(last)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if f != nil && f.LazyLoadMembers {
		q := &stateQuery{all: true}
		var members []string
		for _, ev := range all {
			members = append(members, ev.Sender)
		}
		if err := rd.lazyMembers(q, members); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		q.restrict(st)
	}
	state, err := rd.stateEvents(rm, st, nil)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	res.State = make([]json.RawMessage, len(state))
	for i, ev := range state {
		res.State[i] = ev.JSON
	}
	writeRaw(w, res.appendJSON(nil))
}
