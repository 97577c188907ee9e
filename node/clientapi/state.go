package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/clientevent"
	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

func (a *API) registerState(mux *http.ServeMux) {
	a.route(mux, "GET", "/rooms/{roomId}/state", a.getAllState, true)
	// {stateKey...} takes the rest of the path, so state keys may hold
	// slashes; the form without a trailing slash is the empty key.
	a.route(mux, "GET", "/rooms/{roomId}/state/{eventType}", a.getState, true)
	a.route(mux, "GET", "/rooms/{roomId}/state/{eventType}/{stateKey...}", a.getState, true)
	a.route(mux, "PUT", "/rooms/{roomId}/state/{eventType}", a.putState, true)
	a.route(mux, "PUT", "/rooms/{roomId}/state/{eventType}/{stateKey...}", a.putState, true)
}

func (a *API) getAllState(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	st, err := a.visibleState(r.Context(), roomID, dev.UserID)
	if err != nil {
		return nil, err
	}
	return clientevent.FormatAll(st, roomID), nil
}

func (a *API) getState(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	typ, key := r.PathValue("eventType"), r.PathValue("stateKey")
	ev, err := a.visibleStateEvent(r, roomID, dev.UserID, typ, key)
	if err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, httputil.NotFound("no state event of this type and key")
	}
	if r.URL.Query().Get("format") == "event" {
		return clientevent.Format(ev, roomID), nil
	}
	return json.RawMessage(clientevent.Format(ev, roomID).Content), nil
}

// visibleStateEvent is visibleState for one (type, state key), with a
// single lookup in the common case of a joined user.
func (a *API) visibleStateEvent(r *http.Request, roomID, userID, typ, key string) (gomatrixserverlib.PDU, error) {
	_, m, err := a.memberEvent(r.Context(), roomID, userID)
	if err != nil {
		return nil, err
	}
	if m == roomserver.Join {
		ev, err := a.rs.StateEvent(r.Context(), roomID, typ, key)
		return ev, rsErr(err)
	}
	st, err := a.visibleState(r.Context(), roomID, userID)
	if err != nil {
		return nil, err
	}
	for _, ev := range st {
		if ev.Type() == typ && ev.StateKeyEquals(key) {
			return ev, nil
		}
	}
	return nil, nil
}

func (a *API) putState(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	content, err := readObject(r, roomserver.MaxEventSize)
	if err != nil {
		return nil, err
	}
	typ, key := r.PathValue("eventType"), r.PathValue("stateKey")
	if typ == spec.MRoomCanonicalAlias {
		if err := a.checkCanonicalAlias(r, roomID, content); err != nil {
			return nil, err
		}
	}
	// Setting state to what it already is (same sender, same content)
	// returns the existing event rather than a duplicate, as clients
	// retrying a PUT expect.
	if cur, err := a.rs.StateEvent(r.Context(), roomID, typ, key); err == nil && cur != nil &&
		string(cur.SenderID()) == dev.UserID && sameJSON(cur.Content(), content) {
		if _, m, err := a.memberEvent(r.Context(), roomID, dev.UserID); err == nil && m == roomserver.Join {
			return eventID{cur.EventID()}, nil
		}
	}
	ids, err := a.rs.Send(r.Context(), roomID, roomserver.NewEvent{
		Sender: dev.UserID, Type: typ, StateKey: &key, Content: content,
	})
	if err != nil {
		return nil, rsErr(err)
	}
	return eventID{ids[0]}, nil
}

// sameJSON compares two JSON values by their canonical forms.
func sameJSON(a, b []byte) bool {
	ca, err1 := gomatrixserverlib.CanonicalJSON(a)
	cb, err2 := gomatrixserverlib.CanonicalJSON(b)
	return err1 == nil && err2 == nil && bytes.Equal(ca, cb)
}

// checkCanonicalAlias refuses m.room.canonical_alias content naming local
// aliases that do not point at the room (M_BAD_ALIAS), as the spec asks.
func (a *API) checkCanonicalAlias(r *http.Request, roomID string, content []byte) error {
	var c struct {
		Alias      *string  `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return httputil.BadJSON("invalid canonical alias content: " + err.Error())
	}
	aliases := c.AltAliases
	if c.Alias != nil && *c.Alias != "" {
		aliases = append(aliases, *c.Alias)
	}
	for _, al := range aliases {
		if !strings.HasPrefix(al, "#") || !strings.Contains(al, ":") {
			return httputil.InvalidParam("invalid alias " + al)
		}
		if !strings.HasSuffix(al, ":"+a.cfg.ServerName) {
			continue // other servers' aliases are checked over federation, later
		}
		got, _, err := a.db.RoomAlias(r.Context(), al)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && got != roomID) {
			return badAlias("alias " + al + " does not point to this room")
		}
		if err != nil {
			return err
		}
	}
	return nil
}
