package clientapi

import (
	"context"
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
// stored and served for users of this node; to-device messages and
// device-list changes go to sync, which owns their streams (and their
// federation), when the SyncHandlers the node passed provide KeyStreams.
// Not yet: cross-signing keys and key backup (answered "no backup").

// KeyStreams is what the key and to-device endpoints need of sync; the
// node's SyncHandlers (syncapi.Syncer) provide it. Without it, to-device
// messages are accepted and dropped and /keys/changes is always empty.
type KeyStreams interface {
	// SendToDevice delivers a device's to-device messages (user → device
	// ID or "*" → content), idempotently per (sender device, txnID).
	SendToDevice(ctx context.Context, sender, senderDevice, eventType, txnID string, messages map[string]map[string]json.RawMessage) error
	// DeviceListChanged says a user's devices or keys changed.
	DeviceListChanged(ctx context.Context, userID string, deviceIDs []string, deleted bool) error
	// OneTimeKeysChanged says a device's one-time or fallback keys were
	// uploaded or claimed (sync caches their counts).
	OneTimeKeysChanged(userID, deviceID string)
	// KeyChanges lists who changed keys or left between two sync tokens.
	KeyChanges(ctx context.Context, userID, from, to string) (changed, left []string, err error)
}

func (a *API) keyStreams() KeyStreams {
	k, _ := a.sync.(KeyStreams)
	return k
}

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
	// New identity keys are a device-list change for whoever shares a
	// room with the user (one-time keys are not).
	if ks := a.keyStreams(); ks != nil {
		if len(otks) > 0 || len(fbs) > 0 {
			ks.OneTimeKeysChanged(dev.UserID, dev.DeviceID)
		}
		if deviceKeys != nil {
			if err := ks.DeviceListChanged(r.Context(), dev.UserID, []string{dev.DeviceID}, false); err != nil {
				return nil, fmt.Errorf("upload keys: %w", err)
			}
		}
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
		Timeout    *int64              `json:"timeout"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	mine, remote := splitByServer(a.cfg.ServerName, req.DeviceKeys)
	deviceKeys := map[string]map[string]json.RawMessage{}
	master, selfSigning := map[string]json.RawMessage{}, map[string]json.RawMessage{}
	for user, devices := range mine {
		keys, err := a.db.DeviceKeys(r.Context(), user, devices)
		if err != nil {
			return nil, err
		}
		m := map[string]json.RawMessage{}
		for id, k := range keys {
			m[id] = k
		}
		deviceKeys[user] = m
	}
	failures := map[string]any{}
	if rk := a.remoteKeys(); rk != nil && len(remote) > 0 {
		type answer struct {
			DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
			MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
			SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
		}
		var answers map[string]*answer
		answers, failures = askServers[answer](r.Context(), keysTimeout(req.Timeout), remote, rk.QueryRemoteKeys)
		for server, res := range answers {
			ownUsers(server, res.DeviceKeys, deviceKeys)
			ownUsers(server, res.MasterKeys, master)
			ownUsers(server, res.SelfSigningKeys, selfSigning)
		}
	}
	return map[string]any{
		"device_keys": deviceKeys, "failures": failures,
		"master_keys": master, "self_signing_keys": selfSigning, "user_signing_keys": map[string]any{},
	}, nil
}

func (a *API) keysClaim(r *http.Request, dev *httputil.Device) (any, error) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                       `json:"timeout"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	mine, remote := splitByServer(a.cfg.ServerName, req.OneTimeKeys)
	out := map[string]map[string]map[string]json.RawMessage{}
	for user, devices := range mine {
		for device, alg := range devices {
			k, err := a.db.ClaimOneTimeKey(r.Context(), user, device, alg)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if ks := a.keyStreams(); ks != nil {
				ks.OneTimeKeysChanged(user, device)
			}
			if out[user] == nil {
				out[user] = map[string]map[string]json.RawMessage{}
			}
			out[user][device] = map[string]json.RawMessage{k.KeyID: k.Key}
		}
	}
	failures := map[string]any{}
	if rk := a.remoteKeys(); rk != nil && len(remote) > 0 {
		type answer struct {
			OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
		}
		var answers map[string]*answer
		answers, failures = askServers[answer](r.Context(), keysTimeout(req.Timeout), remote, rk.ClaimRemoteKeys)
		for server, res := range answers {
			ownUsers(server, res.OneTimeKeys, out)
		}
	}
	return map[string]any{"one_time_keys": out, "failures": failures}, nil
}

func (a *API) keysChanges(r *http.Request, dev *httputil.Device) (any, error) {
	q := r.URL.Query()
	from, to := q.Get("from"), q.Get("to")
	if from == "" || to == "" {
		return nil, httputil.MissingParam("from and to are required")
	}
	ks := a.keyStreams()
	if ks == nil {
		return map[string]any{"changed": []string{}, "left": []string{}}, nil
	}
	changed, left, err := ks.KeyChanges(r.Context(), dev.UserID, from, to)
	if err != nil {
		return nil, err
	}
	return map[string]any{"changed": changed, "left": left}, nil
}

// maxToDeviceBody bounds one /sendToDevice (room keys for a few hundred
// devices fit).
const maxToDeviceBody = 1 << 20

func (a *API) sendToDevice(r *http.Request, dev *httputil.Device) (any, error) {
	body, err := readObject(r, maxToDeviceBody)
	if err != nil {
		return nil, err
	}
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := httputil.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	if req.Messages == nil {
		return nil, httputil.MissingParam("messages is required")
	}
	evType, txnID := r.PathValue("eventType"), r.PathValue("txnId")
	if evType == "" || len(evType) > 255 || txnID == "" || len(txnID) > 255 {
		return nil, httputil.InvalidParam("event type and transaction ID must be 1 to 255 bytes")
	}
	for user, devices := range req.Messages {
		if _, err := userIDParam(user); err != nil {
			return nil, err
		}
		for device, content := range devices {
			if device == "" || len(content) == 0 || content[0] != '{' {
				return nil, httputil.BadJSON("each message must be an object for a device ID or \"*\"")
			}
		}
	}
	if ks := a.keyStreams(); ks != nil {
		if err := ks.SendToDevice(r.Context(), dev.UserID, dev.DeviceID, evType, txnID, req.Messages); err != nil {
			return nil, fmt.Errorf("send to device: %w", err)
		}
	}
	return struct{}{}, nil
}

func (a *API) roomKeysVersion(r *http.Request, dev *httputil.Device) (any, error) {
	return nil, httputil.NotFound("no current backup version")
}
