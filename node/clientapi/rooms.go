package clientapi

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/clientevent"
	"hearth/node/httputil"
	"hearth/node/roomserver"
)

func (a *API) registerRooms(mux *http.ServeMux) {
	a.route(mux, "POST", "/createRoom", a.createRoom, true)
	a.route(mux, "PUT", "/rooms/{roomId}/send/{eventType}/{txnId}", a.send, true)
	a.route(mux, "PUT", "/rooms/{roomId}/redact/{eventId}/{txnId}", a.redact, true)
	a.route(mux, "GET", "/rooms/{roomId}/members", a.members, true)
	a.route(mux, "GET", "/rooms/{roomId}/joined_members", a.joinedMembers, true)
	a.route(mux, "GET", "/joined_rooms", a.joinedRooms, true)
	a.registerMembership(mux)
	a.registerState(mux)
}

// eventID is the answer of every endpoint that sends an event.
type eventID struct {
	EventID string `json:"event_id"`
}

// roomIDParam returns the path's room ID, checked for its sigil.
func roomIDParam(r *http.Request) (string, error) {
	id := r.PathValue("roomId")
	if len(id) < 2 || id[0] != '!' || len(id) > 255 {
		return "", httputil.InvalidParam("invalid room ID")
	}
	return id, nil
}

// userIDParam parses a user ID from a request.
func userIDParam(id string) (string, error) {
	if _, err := spec.NewUserID(id, true); err != nil {
		return "", httputil.InvalidParam("invalid user ID: " + err.Error())
	}
	return id, nil
}

func (a *API) send(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	// Content alone past the event limit can never fit: refuse it before
	// any work (the roomserver checks the whole event).
	content, err := readObject(r, roomserver.MaxEventSize)
	if err != nil {
		return nil, err
	}
	ids, err := a.rs.Send(r.Context(), roomID, roomserver.NewEvent{
		Sender:    dev.UserID,
		Type:      r.PathValue("eventType"),
		Content:   content,
		TxnDevice: clientevent.TxnDevice(dev.UserID, dev.DeviceID),
		TxnID:     r.PathValue("txnId"),
	})
	if err != nil {
		return nil, rsErr(err)
	}
	return eventID{ids[0]}, nil
}

func (a *API) redact(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := readJSON(r, &body); err != nil {
		return nil, err
	}
	target := r.PathValue("eventId")
	if !strings.HasPrefix(target, "$") {
		return nil, httputil.InvalidParam("invalid event ID")
	}
	// Room v11 moved "redacts" into content; older versions read the top
	// level. Both are set: each version ignores the other.
	content := map[string]json.RawMessage{"redacts": mustJSON(target)}
	if reason, ok := body["reason"]; ok {
		var s string
		if json.Unmarshal(reason, &s) != nil {
			return nil, httputil.BadJSON("reason must be a string")
		}
		content["reason"] = reason
	}
	ids, err := a.rs.Send(r.Context(), roomID, roomserver.NewEvent{
		Sender:    dev.UserID,
		Type:      spec.MRoomRedaction,
		Content:   mustJSON(content),
		Redacts:   target,
		TxnDevice: clientevent.TxnDevice(dev.UserID, dev.DeviceID),
		TxnID:     r.PathValue("txnId"),
	})
	if err != nil {
		return nil, rsErr(err)
	}
	return eventID{ids[0]}, nil
}

// mustJSON encodes values that always encode (strings, maps of raw JSON).
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic("clientapi: encode: " + err.Error())
	}
	return b
}

// memberEvent returns a user's current member event in a room (nil if
// they never had one) and its membership.
func (a *API) memberEvent(ctx context.Context, roomID, userID string) (gomatrixserverlib.PDU, string, error) {
	ev, err := a.rs.StateEvent(ctx, roomID, spec.MRoomMember, userID)
	if err != nil {
		return nil, "", rsErr(err)
	}
	if ev == nil {
		return nil, "", nil
	}
	m, err := ev.Membership()
	if err != nil {
		return nil, "", err
	}
	return ev, m, nil
}

// worldReadable says whether a room's history is visible to anyone.
func (a *API) worldReadable(ctx context.Context, roomID string) (bool, error) {
	ev, err := a.rs.StateEvent(ctx, roomID, spec.MRoomHistoryVisibility, "")
	if err != nil || ev == nil {
		return false, rsErr(err)
	}
	hv, err := ev.HistoryVisibility()
	return err == nil && hv == gomatrixserverlib.HistoryVisibilityWorldReadable, nil
}

// visibleState returns the room state a user may read: the current state
// while they are joined (or the room is world-readable), the state when
// they left once they have left or were banned, M_FORBIDDEN otherwise.
func (a *API) visibleState(ctx context.Context, roomID, userID string) ([]gomatrixserverlib.PDU, error) {
	ev, m, err := a.memberEvent(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	if m == roomserver.Join {
		st, err := a.rs.CurrentState(ctx, roomID)
		return st, rsErr(err)
	}
	if wr, err := a.worldReadable(ctx, roomID); err != nil || wr {
		if err != nil {
			return nil, err
		}
		st, err := a.rs.CurrentState(ctx, roomID)
		return st, rsErr(err)
	}
	if m == roomserver.Leave || m == roomserver.Ban {
		st, err := a.rs.StateAfter(ctx, ev.EventID())
		return st, rsErr(err)
	}
	return nil, httputil.Forbidden("you are not a member of this room")
}

func (a *API) members(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	want, notWant := q.Get("membership"), q.Get("not_membership")
	st, err := a.visibleState(r.Context(), roomID, dev.UserID)
	if err != nil {
		return nil, err
	}
	chunk := []clientevent.Event{}
	for _, ev := range st {
		if ev.Type() != spec.MRoomMember {
			continue
		}
		m, err := ev.Membership()
		if err != nil || (want != "" && m != want) || (notWant != "" && m == notWant) {
			continue
		}
		chunk = append(chunk, clientevent.Format(ev, roomID))
	}
	return map[string]any{"chunk": chunk}, nil
}

type joinedMember struct {
	DisplayName *string `json:"display_name,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

func (a *API) joinedMembers(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	_, m, err := a.memberEvent(r.Context(), roomID, dev.UserID)
	if err != nil {
		return nil, err
	}
	if m != roomserver.Join {
		wr, err := a.worldReadable(r.Context(), roomID)
		if err != nil {
			return nil, err
		}
		if !wr {
			return nil, httputil.Forbidden("you are not joined to this room")
		}
	}
	st, err := a.rs.CurrentState(r.Context(), roomID)
	if err != nil {
		return nil, rsErr(err)
	}
	joined := map[string]joinedMember{}
	for _, ev := range st {
		if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
			continue
		}
		var c struct {
			Membership  string  `json:"membership"`
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		if json.Unmarshal(ev.Content(), &c) != nil || c.Membership != roomserver.Join {
			continue
		}
		joined[*ev.StateKey()] = joinedMember{DisplayName: c.DisplayName, AvatarURL: c.AvatarURL}
	}
	return map[string]any{"joined": joined}, nil
}

func (a *API) joinedRooms(r *http.Request, dev *httputil.Device) (any, error) {
	rooms, err := a.rs.RoomsWithMembership(r.Context(), dev.UserID, roomserver.Join)
	if err != nil {
		return nil, err
	}
	if rooms == nil {
		rooms = []string{}
	}
	return map[string]any{"joined_rooms": rooms}, nil
}

// powerLevels returns a room's power levels and the user's level in it.
// In rooms whose version privileges creators (v12), creators outrank
// every level.
func (a *API) powerLevels(ctx context.Context, roomID, userID string) (*gomatrixserverlib.PowerLevelContent, int64, error) {
	create, err := a.rs.StateEvent(ctx, roomID, spec.MRoomCreate, "")
	if err != nil {
		return nil, 0, rsErr(err)
	}
	if create == nil {
		return nil, 0, httputil.NotFound("room not found")
	}
	var creators []string
	if v, err := gomatrixserverlib.GetRoomVersion(create.Version()); err == nil && v.PrivilegedCreators() {
		creators = gomatrixserverlib.CreatorsFromCreateEvent(create)
	}
	plEv, err := a.rs.StateEvent(ctx, roomID, spec.MRoomPowerLevels, "")
	if err != nil {
		return nil, 0, rsErr(err)
	}
	var pl gomatrixserverlib.PowerLevelContent
	if plEv != nil {
		if pl, err = gomatrixserverlib.NewPowerLevelContentFromEvent(plEv); err != nil {
			return nil, 0, err
		}
	} else {
		pl.Defaults()
		pl.Users = map[string]int64{string(create.SenderID()): 100}
	}
	for _, c := range creators {
		if c == userID {
			return &pl, math.MaxInt64, nil
		}
	}
	return &pl, pl.UserLevel(spec.SenderID(userID)), nil
}
