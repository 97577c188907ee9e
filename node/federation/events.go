package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

// Caps on what one request may ask for.
const (
	maxBackfill      = 1000
	maxMissingEvents = 100
)

// transaction is the shape /event and /backfill answer with.
type transaction struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
}

func (f *Federation) txn(pdus []json.RawMessage) transaction {
	if pdus == nil {
		pdus = []json.RawMessage{}
	}
	return transaction{Origin: string(f.cfg.ServerName), OriginServerTS: time.Now().UnixMilli(), PDUs: pdus}
}

// hostInRoom refuses a server with no member joined to the room now.
func (f *Federation) hostInRoom(ctx context.Context, roomID, server string) (*storage.Room, error) {
	row, err := f.db.RoomByID(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && row.SnapshotNID == 0) {
		return nil, httputil.NotFound("unknown room")
	}
	if err != nil {
		return nil, err
	}
	n, err := f.db.JoinedLocalCount(ctx, row.NID, server)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, httputil.Forbidden("host not in room")
	}
	return row, nil
}

// joinedViewer is the viewer for a server hostInRoom has found joined to
// room.
func (f *Federation) joinedViewer(server string, room *storage.Room) *viewer {
	vw := f.vis.viewer(server)
	vw.joined[room.NID] = true
	return vw
}

// stored loads an event of a room for serving, with its room's version:
// not found if it is unknown, rejected, or of another room.
func (f *Federation) stored(ctx context.Context, room *storage.Room, eventID string) (*storage.Event, string, error) {
	ev, err := f.db.EventByID(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !servableRow(room, ev)) {
		return nil, "", httputil.NotFound("unknown event")
	}
	if err != nil {
		return nil, "", err
	}
	if room != nil {
		return ev, room.Version, nil
	}
	version, err := f.db.RoomVersionOf(ctx, ev.RoomNID)
	if err != nil {
		return nil, "", err
	}
	return ev, version, nil
}

// servableRow tells whether a stored event may be served at all: never a
// rejected one, and (room given) only one of that room.
func servableRow(room *storage.Room, ev *storage.Event) bool {
	return !ev.Rejected && (room == nil || ev.RoomNID == room.NID)
}

// servable is an event as the viewer's server may have it: whole if
// history visibility lets it see it, else redacted (the graph stays
// connected, the content is withheld). Redacted events are stored
// redacted.
func (f *Federation) servable(ctx context.Context, vw *viewer, ev *storage.Event, version string) (json.RawMessage, bool, error) {
	ok, err := vw.allowed(ctx, ev)
	if err != nil {
		return nil, false, err
	}
	if ok || ev.Redacted {
		return ev.JSON, ok, nil
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		return nil, false, err
	}
	red, err := verImpl.RedactEventJSON(ev.JSON)
	return red, false, err
}

// handleEvent serves GET /v1/event/{eventId} to servers allowed to see it.
func (f *Federation) handleEvent(r *http.Request, origin string, _ []byte) (any, error) {
	ev, version, err := f.stored(r.Context(), nil, r.PathValue("eventId"))
	if err != nil {
		return nil, err
	}
	js, ok, err := f.servable(r.Context(), f.vis.viewer(origin), ev, version)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, httputil.Forbidden("history visibility hides this event from your server")
	}
	return f.txn([]json.RawMessage{js}), nil
}

// stateAt answers /state and /state_ids: the state before an event and
// its auth chain.
func (f *Federation) stateAt(r *http.Request, origin string) (state, auth []gomatrixserverlib.PDU, err error) {
	ctx := r.Context()
	room, err := f.hostInRoom(ctx, r.PathValue("roomId"), origin)
	if err != nil {
		return nil, nil, err
	}
	eventID := r.URL.Query().Get("event_id")
	if eventID == "" {
		return nil, nil, httputil.MissingParam("event_id is required")
	}
	ev, version, err := f.stored(ctx, room, eventID)
	if err != nil {
		return nil, nil, err
	}
	if ev.SnapshotNID == 0 {
		return nil, nil, httputil.NotFound("the state at this event is not known here")
	}
	vw := f.joinedViewer(origin, room)
	if _, ok, err := f.servable(ctx, vw, ev, version); err != nil || !ok {
		if err == nil {
			err = httputil.Forbidden("history visibility hides this event from your server")
		}
		return nil, nil, err
	}
	if state, err = f.rs.StateBefore(ctx, eventID); err != nil {
		return nil, nil, matrixError(err)
	}
	if auth, err = f.rs.AuthChain(ctx, eventIDs(state)); err != nil {
		return nil, nil, matrixError(err)
	}
	return state, auth, nil
}

func eventIDs(evs []gomatrixserverlib.PDU) []string {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.EventID()
	}
	return ids
}

func jsons(evs []gomatrixserverlib.PDU) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		out[i] = e.JSON()
	}
	return out
}

// handleState serves GET /v1/state/{roomId}?event_id=.
func (f *Federation) handleState(r *http.Request, origin string, _ []byte) (any, error) {
	state, auth, err := f.stateAt(r, origin)
	if err != nil {
		return nil, err
	}
	return map[string][]json.RawMessage{"pdus": jsons(state), "auth_chain": jsons(auth)}, nil
}

// handleStateIDs serves GET /v1/state_ids/{roomId}?event_id=.
func (f *Federation) handleStateIDs(r *http.Request, origin string, _ []byte) (any, error) {
	state, auth, err := f.stateAt(r, origin)
	if err != nil {
		return nil, err
	}
	return map[string][]string{"pdu_ids": eventIDs(state), "auth_chain_ids": eventIDs(auth)}, nil
}

// handleEventAuth serves GET /v1/event_auth/{roomId}/{eventId}.
func (f *Federation) handleEventAuth(r *http.Request, origin string, _ []byte) (any, error) {
	ctx := r.Context()
	room, err := f.hostInRoom(ctx, r.PathValue("roomId"), origin)
	if err != nil {
		return nil, err
	}
	ev, version, err := f.stored(ctx, room, r.PathValue("eventId"))
	if err != nil {
		return nil, err
	}
	vw := f.joinedViewer(origin, room)
	if _, ok, err := f.servable(ctx, vw, ev, version); err != nil || !ok {
		if err == nil {
			err = httputil.Forbidden("history visibility hides this event from your server")
		}
		return nil, err
	}
	auth, err := f.rs.AuthChain(ctx, []string{ev.ID})
	if err != nil {
		return nil, matrixError(err)
	}
	return map[string][]json.RawMessage{"auth_chain": jsons(auth)}, nil
}

// handleBackfill serves GET /v1/backfill/{roomId}?v=...&limit=: the given
// events and those before them, newest first, up to limit. The events go
// out as stored (canonical JSON), not decoded and encoded again.
func (f *Federation) handleBackfill(r *http.Request, origin string, _ []byte) (any, error) {
	ctx := r.Context()
	room, err := f.hostInRoom(ctx, r.PathValue("roomId"), origin)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	from := q["v"]
	if len(from) == 0 {
		return nil, httputil.MissingParam("v is required")
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit <= 0 {
		return nil, httputil.InvalidParam("limit must be a positive integer")
	}
	rows, err := f.walk(ctx, room, from, nil, true, 0, min(limit, maxBackfill))
	if err != nil {
		return nil, err
	}
	vw := f.joinedViewer(origin, room)
	out := make([]json.RawMessage, 0, len(rows))
	for _, ev := range rows {
		js, _, err := f.servable(ctx, vw, ev, room.Version)
		if err != nil {
			return nil, err
		}
		out = append(out, js)
	}
	return f.rawTxn(out)
}

// rawTxn is a transaction written out directly: its PDUs are stored
// events, canonical JSON already, so they need no checking and compacting
// by encoding/json (a thousand of them are most of a /backfill answer).
func (f *Federation) rawTxn(pdus []json.RawMessage) (json.RawMessage, error) {
	origin, err := json.Marshal(string(f.cfg.ServerName))
	if err != nil {
		return nil, err
	}
	n := 64 + len(origin)
	for _, p := range pdus {
		n += len(p) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"origin":`...)
	b = append(b, origin...)
	b = append(b, `,"origin_server_ts":`...)
	b = strconv.AppendInt(b, time.Now().UnixMilli(), 10)
	b = append(b, `,"pdus":[`...)
	for i, p := range pdus {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, p...)
	}
	return append(b, "]}"...), nil
}

// handleGetMissingEvents serves POST /v1/get_missing_events/{roomId}: the
// events before latest_events, back to earliest_events, oldest first.
func (f *Federation) handleGetMissingEvents(r *http.Request, origin string, body []byte) (any, error) {
	ctx := r.Context()
	room, err := f.hostInRoom(ctx, r.PathValue("roomId"), origin)
	if err != nil {
		return nil, err
	}
	var req struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    *int     `json:"limit"`
		MinDepth int64    `json:"min_depth"`
	}
	if err := httputil.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	limit := 10
	if req.Limit != nil {
		limit = *req.Limit
	}
	limit = min(max(limit, 0), maxMissingEvents)
	skip := map[string]bool{}
	for _, id := range req.Earliest {
		skip[id] = true
	}
	rows, err := f.walk(ctx, room, req.Latest, skip, false, req.MinDepth, limit)
	if err != nil {
		return nil, err
	}
	vw := f.joinedViewer(origin, room)
	out := make([]json.RawMessage, len(rows))
	for i := range rows {
		js, _, err := f.servable(ctx, vw, rows[i], room.Version)
		if err != nil {
			return nil, err
		}
		out[len(rows)-1-i] = js // oldest first
	}
	return map[string][]json.RawMessage{"events": out}, nil
}

// allowedNow checks an event against its auth events (from the room's
// state): what make_join, make_leave and invites must pass before they
// are offered or sent.
func (f *Federation) allowedNow(ctx context.Context, ev gomatrixserverlib.PDU) error {
	var auth []gomatrixserverlib.PDU
	for _, id := range authDeps(ev) {
		p, err := f.rs.Event(ctx, id)
		if err != nil {
			return matrixError(err)
		}
		auth = append(auth, p)
	}
	provider, err := gomatrixserverlib.NewAuthEvents(auth)
	if err != nil {
		return httputil.Forbidden(err.Error())
	}
	if err := gomatrixserverlib.Allowed(ev, provider, func(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
		return spec.NewUserID(string(s), true)
	}); err != nil {
		return &roomserver.ForbiddenError{Reason: err.Error()}
	}
	return nil
}
