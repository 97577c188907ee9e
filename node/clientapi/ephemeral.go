package clientapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"hearth/node/httputil"
	"hearth/node/roomserver"
)

// Typing, receipts, read markers and presence: validated here, then handed
// to sync through the Config hooks (sync owns how they are stored and
// delivered). m.fully_read markers are room account data, written here.
// Presence is read back from sync when the SyncHandlers provide it.

// PresenceSource is what GET /presence reads of sync, when the node's
// SyncHandlers provide it (syncapi.Syncer does): a user's presence as the
// endpoint answers it, if known.
type PresenceSource interface {
	PresenceContent(userID string) (json.RawMessage, bool)
}

func (a *API) registerEphemeral(mux *http.ServeMux) {
	a.route(mux, "PUT", "/rooms/{roomId}/typing/{userId}", a.typing, true)
	a.route(mux, "POST", "/rooms/{roomId}/receipt/{receiptType}/{eventId}", a.receipt, true)
	a.route(mux, "POST", "/rooms/{roomId}/read_markers", a.readMarkers, true)
	a.route(mux, "GET", "/presence/{userId}/status", a.getPresence, true)
	a.route(mux, "PUT", "/presence/{userId}/status", a.putPresence, true)
}

// requireJoined answers M_FORBIDDEN unless the user is joined to the room.
func (a *API) requireJoined(r *http.Request, roomID, userID string) error {
	_, m, err := a.memberEvent(r.Context(), roomID, userID)
	if err != nil {
		return err
	}
	if m != roomserver.Join {
		return httputil.Forbidden("you are not joined to this room")
	}
	return nil
}

// maxTypingTimeout caps how long one typing notification lasts.
const maxTypingTimeout = 2 * time.Minute

func (a *API) typing(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	if err := ownUser(r, dev); err != nil {
		return nil, err
	}
	var req struct {
		Typing  *bool `json:"typing"`
		Timeout int64 `json:"timeout"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Typing == nil {
		return nil, httputil.MissingParam("typing is required")
	}
	if req.Timeout < 0 {
		return nil, httputil.InvalidParam("timeout must not be negative")
	}
	if err := a.requireJoined(r, roomID, dev.UserID); err != nil {
		return nil, err
	}
	timeout := min(time.Duration(req.Timeout)*time.Millisecond, maxTypingTimeout)
	if *req.Typing && timeout == 0 {
		timeout = 30 * time.Second
	}
	if a.cfg.OnTyping != nil {
		a.cfg.OnTyping(roomID, dev.UserID, *req.Typing, timeout)
	}
	return struct{}{}, nil
}

func (a *API) receipt(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		ThreadID string `json:"thread_id"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	evID := r.PathValue("eventId")
	if !strings.HasPrefix(evID, "$") {
		return nil, httputil.InvalidParam("invalid event ID")
	}
	typ := r.PathValue("receiptType")
	switch typ {
	case "m.read", "m.read.private", "m.fully_read":
	default:
		return nil, httputil.InvalidParam("unknown receipt type " + typ)
	}
	if err := a.requireJoined(r, roomID, dev.UserID); err != nil {
		return nil, err
	}
	if typ == "m.fully_read" {
		return struct{}{}, a.setFullyRead(r, dev.UserID, roomID, evID)
	}
	if a.cfg.OnReceipt != nil {
		a.cfg.OnReceipt(roomID, dev.UserID, typ, evID, req.ThreadID)
	}
	return struct{}{}, nil
}

func (a *API) readMarkers(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := readJSON(r, &body); err != nil {
		return nil, err
	}
	req := map[string]string{}
	for _, k := range []string{"m.fully_read", "m.read", "m.read.private"} {
		raw, ok := body[k]
		if !ok || string(raw) == "null" {
			continue
		}
		var v string
		if json.Unmarshal(raw, &v) != nil || !strings.HasPrefix(v, "$") {
			return nil, httputil.InvalidParam("invalid event ID for " + k)
		}
		req[k] = v
	}
	if err := a.requireJoined(r, roomID, dev.UserID); err != nil {
		return nil, err
	}
	if ev := req["m.fully_read"]; ev != "" {
		if err := a.setFullyRead(r, dev.UserID, roomID, ev); err != nil {
			return nil, err
		}
	}
	for _, typ := range []string{"m.read", "m.read.private"} {
		if ev := req[typ]; ev != "" && a.cfg.OnReceipt != nil {
			a.cfg.OnReceipt(roomID, dev.UserID, typ, ev, "")
		}
	}
	return struct{}{}, nil
}

func (a *API) setFullyRead(r *http.Request, userID, roomID, eventID string) error {
	pos, err := a.db.PutAccountData(r.Context(), userID, roomID, "m.fully_read", mustJSON(map[string]string{"event_id": eventID}))
	if err != nil {
		return fmt.Errorf("set fully read marker: %w", err)
	}
	a.accountDataChanged(userID, pos)
	return nil
}

type presenceState struct {
	Presence  string
	StatusMsg string
	Since     time.Time
}

var presenceValues = map[string]bool{"online": true, "offline": true, "unavailable": true}

func (a *API) putPresence(r *http.Request, dev *httputil.Device) (any, error) {
	if err := ownUser(r, dev); err != nil {
		return nil, err
	}
	var req struct {
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	if !presenceValues[req.Presence] {
		return nil, httputil.InvalidParam("presence must be online, offline or unavailable")
	}
	msg := ""
	if req.StatusMsg != nil {
		msg = *req.StatusMsg
	}
	if len(msg) > maxReason {
		return nil, httputil.TooLarge("status_msg is too long")
	}
	a.presenceMu.Lock()
	a.presence[dev.UserID] = presenceState{Presence: req.Presence, StatusMsg: msg, Since: time.Now()}
	a.presenceMu.Unlock()
	if a.cfg.OnPresence != nil {
		a.cfg.OnPresence(dev.UserID, req.Presence, msg)
	}
	return struct{}{}, nil
}

func (a *API) getPresence(r *http.Request, dev *httputil.Device) (any, error) {
	userID, err := userIDParam(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	if ps, ok := a.sync.(PresenceSource); ok {
		if content, known := ps.PresenceContent(userID); known {
			return content, nil
		}
	}
	a.presenceMu.Lock()
	p, ok := a.presence[userID]
	a.presenceMu.Unlock()
	if !ok {
		if exists, err := a.db.AccountExists(r.Context(), userID); err != nil || !exists {
			if err != nil {
				return nil, err
			}
			return nil, httputil.NotFound("unknown user")
		}
		return map[string]any{"presence": "offline"}, nil
	}
	resp := map[string]any{
		"presence":         p.Presence,
		"last_active_ago":  time.Since(p.Since).Milliseconds(),
		"currently_active": p.Presence == "online",
	}
	if p.StatusMsg != "" {
		resp["status_msg"] = p.StatusMsg
	}
	return resp, nil
}
