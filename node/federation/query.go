package federation

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/httputil"
	"hearth/node/storage"
)

// keyValidity is how far ahead the server's key is declared valid: keys
// never rotate (the key is the server's name).
const keyValidity = 10 * 365 * 24 * time.Hour

// handleServerKeys serves GET /_matrix/key/v2/server: the server's key,
// self-signed. Hearth servers never need it (a name is its key); it is
// served for completeness.
func (f *Federation) handleServerKeys(w http.ResponseWriter, r *http.Request) {
	pub := f.cfg.PrivateKey.Public().(ed25519.PublicKey)
	body, _ := json.Marshal(map[string]any{
		"server_name":     f.cfg.ServerName,
		"valid_until_ts":  time.Now().Add(keyValidity).UnixMilli(),
		"verify_keys":     map[gomatrixserverlib.KeyID]map[string]string{f.cfg.KeyID: {"key": base64.RawStdEncoding.EncodeToString(pub)}},
		"old_verify_keys": map[string]any{},
	})
	signed, err := gomatrixserverlib.SignJSON(string(f.cfg.ServerName), f.cfg.KeyID, f.cfg.PrivateKey, body)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(signed)
}

// localUser parses a user ID that must belong to this server.
func (f *Federation) localUser(userID string) (*spec.UserID, error) {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, httputil.InvalidParam("invalid user ID")
	}
	if u.Domain() != f.cfg.ServerName {
		return nil, httputil.InvalidParam("the user is not on this server")
	}
	return u, nil
}

// handleQueryDirectory serves GET /v1/query/directory?room_alias=.
func (f *Federation) handleQueryDirectory(r *http.Request, _ string, _ []byte) (any, error) {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		return nil, httputil.MissingParam("room_alias is required")
	}
	if _, server, err := gomatrixserverlib.SplitID('#', alias); err != nil {
		return nil, httputil.InvalidParam("invalid room alias")
	} else if server != f.cfg.ServerName {
		return nil, httputil.NotFound("the alias is not on this server")
	}
	roomID, _, err := f.db.RoomAlias(r.Context(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("unknown room alias")
	}
	if err != nil {
		return nil, err
	}
	servers := []string{string(f.cfg.ServerName)}
	others, err := f.RoomServers(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": roomID, "servers": append(servers, others...)}, nil
}

// handleQueryProfile serves GET /v1/query/profile?user_id=&field=.
func (f *Federation) handleQueryProfile(r *http.Request, _ string, _ []byte) (any, error) {
	q := r.URL.Query()
	u, err := f.localUser(q.Get("user_id"))
	if err != nil {
		return nil, err
	}
	p, err := f.db.Profile(r.Context(), u.String())
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("unknown user")
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	field := q.Get("field")
	if p.DisplayName != "" && (field == "" || field == "displayname") {
		out["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" && (field == "" || field == "avatar_url") {
		out["avatar_url"] = p.AvatarURL
	}
	return out, nil
}

// handleUserDevices serves GET /v1/user/devices/{userId}.
func (f *Federation) handleUserDevices(r *http.Request, _ string, _ []byte) (any, error) {
	ctx := r.Context()
	u, err := f.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	devs, err := f.db.Devices(ctx, u.String())
	if err != nil {
		return nil, err
	}
	keys, err := f.db.DeviceKeys(ctx, u.String(), nil)
	if err != nil {
		return nil, err
	}
	type device struct {
		DeviceID    string          `json:"device_id"`
		DisplayName string          `json:"device_display_name,omitempty"`
		Keys        json.RawMessage `json:"keys,omitempty"`
	}
	out := []device{}
	for _, d := range devs {
		dev := device{DeviceID: d.DeviceID}
		if d.DisplayName != nil {
			dev.DisplayName = *d.DisplayName
		}
		if k := keys[d.DeviceID]; json.Valid(k) {
			dev.Keys = k
		}
		out = append(out, dev)
	}
	return map[string]any{"user_id": u.String(), "stream_id": 0, "devices": out}, nil
}

// handleKeysQuery serves POST /v1/user/keys/query for this server's users.
func (f *Federation) handleKeysQuery(r *http.Request, _ string, body []byte) (any, error) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httputil.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	out := map[string]map[string]json.RawMessage{}
	for user, devices := range req.DeviceKeys {
		if _, err := f.localUser(user); err != nil {
			continue
		}
		keys, err := f.db.DeviceKeys(r.Context(), user, devices)
		if err != nil {
			return nil, err
		}
		m := map[string]json.RawMessage{}
		for d, k := range keys {
			if json.Valid(k) {
				m[d] = k
			}
		}
		out[user] = m
	}
	return map[string]any{"device_keys": out}, nil
}

// handleKeysClaim serves POST /v1/user/keys/claim for this server's users.
func (f *Federation) handleKeysClaim(r *http.Request, _ string, body []byte) (any, error) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httputil.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	out := map[string]map[string]map[string]json.RawMessage{}
	for user, devices := range req.OneTimeKeys {
		if _, err := f.localUser(user); err != nil {
			continue
		}
		for device, alg := range devices {
			k, err := f.db.ClaimOneTimeKey(r.Context(), user, device, alg)
			if errors.Is(err, storage.ErrNotFound) || (err == nil && !json.Valid(k.Key)) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if f.cfg.OnKeysClaimed != nil {
				f.cfg.OnKeysClaimed(user, device)
			}
			if out[user] == nil {
				out[user] = map[string]map[string]json.RawMessage{}
			}
			out[user][device] = map[string]json.RawMessage{k.KeyID: k.Key}
		}
	}
	return map[string]any{"one_time_keys": out}, nil
}
