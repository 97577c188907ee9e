package clientapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"hearth/node/httputil"
	"hearth/node/storage"
)

func (a *API) registerUserData(mux *http.ServeMux) {
	a.route(mux, "POST", "/user/{userId}/filter", a.putFilter, true)
	a.route(mux, "GET", "/user/{userId}/filter/{filterId}", a.getFilter, true)
	a.route(mux, "GET", "/user/{userId}/account_data/{type}", a.getAccountData, true)
	a.route(mux, "PUT", "/user/{userId}/account_data/{type}", a.putAccountData, true)
	a.route(mux, "GET", "/user/{userId}/rooms/{roomId}/account_data/{type}", a.getAccountData, true)
	a.route(mux, "PUT", "/user/{userId}/rooms/{roomId}/account_data/{type}", a.putAccountData, true)
	a.registerProfile(mux)
}

// ownUser checks that the path's user is the caller.
func ownUser(r *http.Request, dev *httputil.Device) error {
	if r.PathValue("userId") != dev.UserID {
		return httputil.Forbidden("cannot access another user's data")
	}
	return nil
}

// maxFilterSize keeps stored filters small: they are read on every
// /sync that names one.
const maxFilterSize = 16 << 10

func (a *API) putFilter(r *http.Request, dev *httputil.Device) (any, error) {
	if err := ownUser(r, dev); err != nil {
		return nil, err
	}
	body, err := readObject(r, maxFilterSize)
	if err != nil {
		return nil, err
	}
	// Check the filter's shape where clients get it wrong; unknown keys
	// are kept, as the spec asks servers to ignore them.
	var f struct {
		EventFields []string        `json:"event_fields"`
		EventFormat string          `json:"event_format"`
		Presence    json.RawMessage `json:"presence"`
		AccountData json.RawMessage `json:"account_data"`
		Room        json.RawMessage `json:"room"`
	}
	if err := json.Unmarshal(body, &f); err != nil {
		return nil, httputil.BadJSON("invalid filter: " + err.Error())
	}
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return nil, httputil.BadJSON("event_format must be client or federation")
	}
	for _, sub := range []json.RawMessage{f.Presence, f.AccountData, f.Room} {
		if len(sub) > 0 && string(sub) != "null" && !isObject(sub) {
			return nil, httputil.BadJSON("filter sections must be objects")
		}
	}
	id, err := a.db.PutFilter(r.Context(), dev.UserID, body)
	if err != nil {
		return nil, fmt.Errorf("put filter: %w", err)
	}
	return map[string]string{"filter_id": strconv.FormatInt(id, 10)}, nil
}

func (a *API) getFilter(r *http.Request, dev *httputil.Device) (any, error) {
	if err := ownUser(r, dev); err != nil {
		return nil, err
	}
	id, err := strconv.ParseInt(r.PathValue("filterId"), 10, 64)
	if err != nil {
		return nil, httputil.NotFound("unknown filter")
	}
	f, err := a.db.Filter(r.Context(), dev.UserID, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("unknown filter")
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(f), nil
}

// maxAccountDataSize caps one account data item (sync sends them all in
// an initial sync).
const maxAccountDataSize = 64 << 10

// serverAccountData are types only the server writes.
var serverAccountData = map[string]bool{"m.fully_read": true, "m.push_rules": true}

func (a *API) getAccountData(r *http.Request, dev *httputil.Device) (any, error) {
	if err := ownUser(r, dev); err != nil {
		return nil, err
	}
	if err := checkAccountDataRoom(r); err != nil {
		return nil, err
	}
	c, err := a.db.AccountData(r.Context(), dev.UserID, r.PathValue("roomId"), r.PathValue("type"))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("no account data of this type")
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(c), nil
}

func checkAccountDataRoom(r *http.Request) error {
	if id := r.PathValue("roomId"); id != "" && id[0] != '!' {
		return httputil.InvalidParam("invalid room ID")
	}
	return nil
}

func (a *API) putAccountData(r *http.Request, dev *httputil.Device) (any, error) {
	if err := ownUser(r, dev); err != nil {
		return nil, err
	}
	if err := checkAccountDataRoom(r); err != nil {
		return nil, err
	}
	typ := r.PathValue("type")
	if serverAccountData[typ] {
		return nil, httputil.Errf(http.StatusMethodNotAllowed, "M_BAD_JSON", "cannot set "+typ+" through this API")
	}
	body, err := readObject(r, maxAccountDataSize)
	if err != nil {
		return nil, err
	}
	pos, err := a.db.PutAccountData(r.Context(), dev.UserID, r.PathValue("roomId"), typ, body)
	if err != nil {
		return nil, fmt.Errorf("put account data: %w", err)
	}
	a.accountDataChanged(dev.UserID, pos)
	return struct{}{}, nil
}
