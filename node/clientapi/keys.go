package clientapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"hearth/node/httputil"
	"hearth/node/storage"
)

// End-to-end encryption: the minimum a client with Rust crypto needs to
// start and to encrypt to local devices — device and one-time keys are
// stored and served for users of this node. Not yet: cross-signing keys,
// key backup (answered "no backup"), device list changes (always empty)
// and to-device delivery (accepted and dropped: sync owns its stream).

func (a *API) registerKeys(mux *http.ServeMux) {
	a.route(mux, "POST", "/keys/upload", a.keysUpload, true)
	a.route(mux, "POST", "/keys/query", a.keysQuery, true)
	a.route(mux, "POST", "/keys/claim", a.keysClaim, true)
	a.route(mux, "GET", "/keys/changes", a.keysChanges, true)
	a.route(mux, "PUT", "/sendToDevice/{eventType}/{txnId}", a.sendToDevice, true)
	a.route(mux, "GET", "/room_keys/version", a.roomKeysVersion, true)
}

// maxKeysUpload bounds one /keys/upload (clients upload ~50 keys at once).
const maxKeysUpload = 256 << 10

func (a *API) keysUpload(r *http.Request, dev *httputil.Device) (any, error) {
	body, err := readObject(r, maxKeysUpload)
	if err != nil {
		return nil, err
	}
	var req struct {
		DeviceKeys     json.RawMessage            `json:"device_keys"`
		OneTimeKeys    map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys   map[string]json.RawMessage `json:"fallback_keys"`
		FallbackKeysV0 map[string]json.RawMessage `json:"org.matrix.msc2732.fallback_keys"`
	}
	if err := httputil.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	var deviceKeys []byte
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		var dk struct {
			UserID   string `json:"user_id"`
			DeviceID string `json:"device_id"`
		}
		if err := json.Unmarshal(req.DeviceKeys, &dk); err != nil {
			return nil, httputil.BadJSON("device_keys must be an object")
		}
		if dk.UserID != dev.UserID || dk.DeviceID != dev.DeviceID {
			return nil, httputil.InvalidParam("device_keys are for another device")
		}
		deviceKeys = req.DeviceKeys
	}
	if req.FallbackKeys == nil {
		req.FallbackKeys = req.FallbackKeysV0
	}
	otks, err := parseKeys(req.OneTimeKeys)
	if err != nil {
		return nil, err
	}
	fbs, err := parseKeys(req.FallbackKeys)
	if err != nil {
		return nil, err
	}
	counts, err := a.db.PutDeviceKeys(r.Context(), dev.UserID, dev.DeviceID, deviceKeys, otks, fbs)
	if err != nil {
		return nil, fmt.Errorf("upload keys: %w", err)
	}
	return map[string]any{"one_time_key_counts": counts}, nil
}

// parseKeys turns {"algorithm:id": key} into storage rows.
func parseKeys(m map[string]json.RawMessage) ([]storage.OneTimeKey, error) {
	out := make([]storage.OneTimeKey, 0, len(m))
	for id, k := range m {
		alg, _, ok := strings.Cut(id, ":")
		if !ok || alg == "" {
			return nil, httputil.BadJSON("key IDs must be algorithm:id")
		}
		out = append(out, storage.OneTimeKey{KeyID: id, Algorithm: alg, Key: k})
	}
	return out, nil
}

func (a *API) keysQuery(r *http.Request, dev *httputil.Device) (any, error) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	out := map[string]map[string]json.RawMessage{}
	for user, devices := range req.DeviceKeys {
		if !strings.HasSuffix(user, ":"+a.cfg.ServerName) {
			continue // remote users' keys come with federation
		}
		keys, err := a.db.DeviceKeys(r.Context(), user, devices)
		if err != nil {
			return nil, err
		}
		m := map[string]json.RawMessage{}
		for id, k := range keys {
			m[id] = k
		}
		out[user] = m
	}
	return map[string]any{
		"device_keys": out, "failures": map[string]any{},
		"master_keys": map[string]any{}, "self_signing_keys": map[string]any{}, "user_signing_keys": map[string]any{},
	}, nil
}

func (a *API) keysClaim(r *http.Request, dev *httputil.Device) (any, error) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	out := map[string]map[string]map[string]json.RawMessage{}
	for user, devices := range req.OneTimeKeys {
		if !strings.HasSuffix(user, ":"+a.cfg.ServerName) {
			continue
		}
		for device, alg := range devices {
			k, err := a.db.ClaimOneTimeKey(r.Context(), user, device, alg)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if out[user] == nil {
				out[user] = map[string]map[string]json.RawMessage{}
			}
			out[user][device] = map[string]json.RawMessage{k.KeyID: k.Key}
		}
	}
	return map[string]any{"one_time_keys": out, "failures": map[string]any{}}, nil
}

func (a *API) keysChanges(r *http.Request, dev *httputil.Device) (any, error) {
	return map[string]any{"changed": []string{}, "left": []string{}}, nil
}

func (a *API) sendToDevice(r *http.Request, dev *httputil.Device) (any, error) {
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Messages == nil {
		return nil, httputil.MissingParam("messages is required")
	}
	return struct{}{}, nil
}

func (a *API) roomKeysVersion(r *http.Request, dev *httputil.Device) (any, error) {
	return nil, httputil.NotFound("no current backup version")
}
