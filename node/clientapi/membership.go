package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

func (a *API) registerMembership(mux *http.ServeMux) {
	a.route(mux, "POST", "/join/{roomIdOrAlias}", a.join, true)
	a.route(mux, "POST", "/rooms/{roomId}/join", a.join, true)
	a.route(mux, "POST", "/rooms/{roomId}/invite", a.invite, true)
	a.route(mux, "POST", "/rooms/{roomId}/leave", a.leave, true)
	a.route(mux, "POST", "/rooms/{roomId}/kick", a.kick, true)
	a.route(mux, "POST", "/rooms/{roomId}/ban", a.ban, true)
	a.route(mux, "POST", "/rooms/{roomId}/unban", a.unban, true)
	a.route(mux, "POST", "/rooms/{roomId}/forget", a.forget, true)
}

// maxReason bounds a membership reason (it is copied into the event).
const maxReason = 2048

type membershipRequest struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
	// Medium marks a third-party (e-mail) invite, which needs an
	// identity server: not supported.
	Medium string `json:"medium"`
}

func readMembership(r *http.Request, needUser bool) (membershipRequest, error) {
	var req membershipRequest
	if err := readJSON(r, &req); err != nil {
		return req, err
	}
	if len(req.Reason) > maxReason {
		return req, httputil.TooLarge("reason is too long")
	}
	if req.Medium != "" {
		return req, httputil.Errf(400, "M_UNRECOGNIZED", "third-party invites are not supported")
	}
	if needUser {
		if req.UserID == "" {
			return req, httputil.MissingParam("user_id is required")
		}
		if _, err := userIDParam(req.UserID); err != nil {
			return req, err
		}
	}
	return req, nil
}

// sendMember sends an m.room.member event about target.
func (a *API) sendMember(r *http.Request, roomID, sender, target string, content json.RawMessage) (string, error) {
	ids, err := a.rs.Send(r.Context(), roomID, roomserver.NewEvent{
		Sender: sender, Type: spec.MRoomMember, StateKey: &target, Content: content,
	})
	if err != nil {
		return "", rsErr(err)
	}
	return ids[0], nil
}

func plainMember(membership, reason string) json.RawMessage {
	c := map[string]string{"membership": membership}
	if reason != "" {
		c["reason"] = reason
	}
	return mustJSON(c)
}

// resolveRoom turns a room ID or a local alias into a room ID.
func (a *API) resolveRoom(r *http.Request, idOrAlias string) (string, error) {
	switch {
	case strings.HasPrefix(idOrAlias, "!"):
		return idOrAlias, nil
	case strings.HasPrefix(idOrAlias, "#"):
		if !strings.HasSuffix(idOrAlias, ":"+a.cfg.ServerName) {
			return "", httputil.NotFound("room aliases of other servers cannot be resolved yet")
		}
		roomID, _, err := a.db.RoomAlias(r.Context(), idOrAlias)
		if errors.Is(err, storage.ErrNotFound) {
			return "", httputil.NotFound("room alias not found")
		}
		return roomID, err
	}
	return "", httputil.InvalidParam("expected a room ID or a room alias")
}

func (a *API) join(r *http.Request, dev *httputil.Device) (any, error) {
	target := r.PathValue("roomIdOrAlias")
	if target == "" {
		target = r.PathValue("roomId")
	}
	req, err := readMembership(r, false)
	if err != nil {
		return nil, err
	}
	if a.cfg.Federation != nil && !a.holds(r.Context(), target) {
		roomID, err := a.cfg.Federation.PerformJoin(r.Context(), target, dev.UserID, r.URL.Query()["server_name"])
		if err != nil {
			return nil, err
		}
		return map[string]string{"room_id": roomID}, nil
	}
	roomID, err := a.resolveRoom(r, target)
	if err != nil {
		return nil, err
	}
	_, m, err := a.memberEvent(r.Context(), roomID, dev.UserID)
	if isCode(err, "M_NOT_FOUND") {
		return nil, httputil.NotFound("room not known to this server")
	}
	if err != nil {
		return nil, err
	}
	if m != roomserver.Join {
		p, err := a.db.Profile(r.Context(), dev.UserID)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		if _, err := a.sendMember(r, roomID, dev.UserID, dev.UserID, memberContent(roomserver.Join, p, req.Reason)); err != nil {
			return nil, err
		}
		if err := a.db.UnforgetRoom(r.Context(), dev.UserID, roomID); err != nil {
			slog.Warn("unforget room on join", "user", dev.UserID, "room", roomID, "err", err)
		}
	}
	return map[string]string{"room_id": roomID}, nil
}

func (a *API) invite(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	req, err := readMembership(r, true)
	if err != nil {
		return nil, err
	}
	if a.cfg.Federation != nil && !strings.HasSuffix(req.UserID, ":"+a.cfg.ServerName) {
		// The invitee's server must sign the invite before it is ours.
		return struct{}{}, a.cfg.Federation.PerformInvite(r.Context(), roomID, dev.UserID, req.UserID)
	}
	if _, err := a.sendMember(r, roomID, dev.UserID, req.UserID, plainMember(roomserver.Invite, req.Reason)); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// holds says whether this node holds a room's state (so a join is a local
// send), for a room ID or an alias of ours.
func (a *API) holds(ctx context.Context, idOrAlias string) bool {
	if strings.HasPrefix(idOrAlias, "#") {
		return strings.HasSuffix(idOrAlias, ":"+a.cfg.ServerName)
	}
	create, err := a.rs.StateEvent(ctx, idOrAlias, spec.MRoomCreate, "")
	return err == nil && create != nil
}

func (a *API) leave(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	req, err := readMembership(r, false)
	if err != nil {
		return nil, err
	}
	if a.cfg.Federation != nil && !a.holds(r.Context(), roomID) {
		// An invite to a room held elsewhere: reject it there.
		return struct{}{}, a.cfg.Federation.PerformLeave(r.Context(), roomID, dev.UserID, nil)
	}
	_, m, err := a.memberEvent(r.Context(), roomID, dev.UserID)
	if err != nil {
		return nil, err
	}
	switch m {
	case roomserver.Leave, roomserver.Ban:
		// Already out: leaving again changes nothing.
		return struct{}{}, nil
	case "":
		return nil, httputil.Forbidden("you are not a member of this room")
	}
	if _, err := a.sendMember(r, roomID, dev.UserID, dev.UserID, plainMember(roomserver.Leave, req.Reason)); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (a *API) kick(r *http.Request, dev *httputil.Device) (any, error) {
	return a.moderate(r, dev, roomserver.Leave, func(m string) error {
		if m != roomserver.Join && m != roomserver.Invite && m != roomserver.Knock {
			return httputil.Forbidden("the user is not in the room")
		}
		return nil
	})
}

func (a *API) ban(r *http.Request, dev *httputil.Device) (any, error) {
	return a.moderate(r, dev, roomserver.Ban, nil)
}

func (a *API) unban(r *http.Request, dev *httputil.Device) (any, error) {
	return a.moderate(r, dev, roomserver.Leave, func(m string) error {
		if m != roomserver.Ban {
			return httputil.Forbidden("the user is not banned")
		}
		return nil
	})
}

// moderate sends a membership change about another user, after check
// (if any) accepts the target's current membership.
func (a *API) moderate(r *http.Request, dev *httputil.Device, membership string, check func(string) error) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	req, err := readMembership(r, true)
	if err != nil {
		return nil, err
	}
	if check != nil {
		_, m, err := a.memberEvent(r.Context(), roomID, req.UserID)
		if err != nil {
			return nil, err
		}
		if err := check(m); err != nil {
			return nil, err
		}
	}
	if _, err := a.sendMember(r, roomID, dev.UserID, req.UserID, plainMember(membership, req.Reason)); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (a *API) forget(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	_, m, err := a.memberEvent(r.Context(), roomID, dev.UserID)
	if err != nil {
		return nil, err
	}
	switch m {
	case "":
		return nil, httputil.NotFound("you were never a member of this room")
	case roomserver.Join:
		return nil, unknownErr(400, "leave the room before forgetting it")
	}
	if err := a.db.ForgetRoom(r.Context(), dev.UserID, roomID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
