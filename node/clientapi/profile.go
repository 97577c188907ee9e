package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

func (a *API) registerProfile(mux *http.ServeMux) {
	a.route(mux, "GET", "/profile/{userId}", a.getProfile, false)
	a.route(mux, "GET", "/profile/{userId}/{field}", a.getProfileField, false)
	a.route(mux, "PUT", "/profile/{userId}/{field}", a.putProfileField, true)
}

// profileFields maps the API's field names to their JSON keys.
var profileFields = map[string]bool{"displayname": true, "avatar_url": true}

// localProfile loads a user's profile: M_NOT_FOUND for users this node
// does not host (remote profiles come with federation).
func (a *API) localProfile(ctx context.Context, userID string) (storage.Profile, error) {
	p, err := a.db.Profile(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return p, httputil.NotFound("unknown user")
	}
	return p, err
}

func profileJSON(p storage.Profile) map[string]string {
	out := map[string]string{}
	if p.DisplayName != "" {
		out["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" {
		out["avatar_url"] = p.AvatarURL
	}
	return out
}

func (a *API) getProfile(r *http.Request, _ *httputil.Device) (any, error) {
	p, err := a.localProfile(r.Context(), r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	return profileJSON(p), nil
}

func (a *API) getProfileField(r *http.Request, _ *httputil.Device) (any, error) {
	field := r.PathValue("field")
	if !profileFields[field] {
		return nil, httputil.NotFound("unknown profile field")
	}
	p, err := a.localProfile(r.Context(), r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	v, ok := profileJSON(p)[field]
	if !ok {
		return nil, httputil.NotFound("profile field not set")
	}
	return map[string]string{field: v}, nil
}

// maxProfileField bounds a display name or avatar URL: they are copied
// into a member event in every joined room.
const maxProfileField = 1024

func (a *API) putProfileField(r *http.Request, dev *httputil.Device) (any, error) {
	field := r.PathValue("field")
	if !profileFields[field] {
		return nil, httputil.Errf(400, "M_UNRECOGNIZED", "unknown profile field")
	}
	if err := ownUser(r, dev); err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := readJSON(r, &body); err != nil {
		return nil, err
	}
	var v string
	if raw, ok := body[field]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, httputil.BadJSON(field + " must be a string")
		}
	}
	if len(v) > maxProfileField {
		return nil, httputil.TooLarge(field + " is too long")
	}
	if field == "avatar_url" && v != "" && !strings.HasPrefix(v, "mxc://") {
		return nil, httputil.InvalidParam("avatar_url must be an mxc:// URI")
	}
	var err error
	if field == "displayname" {
		err = a.db.SetDisplayName(r.Context(), dev.UserID, v)
	} else {
		err = a.db.SetAvatarURL(r.Context(), dev.UserID, v)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("unknown user")
	}
	if err != nil {
		return nil, fmt.Errorf("set %s: %w", field, err)
	}
	a.propagateProfile(r.Context(), dev.UserID)
	return struct{}{}, nil
}

// memberContent is a join's m.room.member content with the user's profile.
func memberContent(membership string, p storage.Profile, reason string) json.RawMessage {
	c := map[string]string{"membership": membership}
	if p.DisplayName != "" {
		c["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" {
		c["avatar_url"] = p.AvatarURL
	}
	if reason != "" {
		c["reason"] = reason
	}
	b, _ := json.Marshal(c) // a map of strings always encodes
	return b
}

// propagateProfile sends a new member event with the user's profile into
// every room they are joined to. Best effort: a room that refuses it
// keeps the old profile, which is not worth failing the request over.
func (a *API) propagateProfile(ctx context.Context, userID string) {
	p, err := a.db.Profile(ctx, userID)
	if err != nil {
		slog.Warn("profile propagation: load profile", "user", userID, "err", err)
		return
	}
	rooms, err := a.rs.RoomsWithMembership(ctx, userID, roomserver.Join)
	if err != nil {
		slog.Warn("profile propagation: list rooms", "user", userID, "err", err)
		return
	}
	content := memberContent(roomserver.Join, p, "")
	for _, roomID := range rooms {
		uid := userID
		if _, err := a.rs.Send(ctx, roomID, roomserver.NewEvent{
			Sender: userID, Type: "m.room.member", StateKey: &uid, Content: content,
		}); err != nil {
			slog.Warn("profile propagation: send member event", "user", userID, "room", roomID, "err", err)
		}
	}
}
