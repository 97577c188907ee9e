package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/httputil"
	"hearth/node/roomserver"
)

func userIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// makeMembership serves make_join and make_leave: an unsigned membership
// event for a user of the requesting server, built on the room's current
// state, after checking the auth rules would allow it.
func (f *Federation) makeMembership(r *http.Request, origin, membership string, checkVersions bool) (any, error) {
	ctx := r.Context()
	roomID, userID := r.PathValue("roomId"), r.PathValue("userId")
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, httputil.InvalidParam("invalid user ID")
	}
	if string(u.Domain()) != origin {
		return nil, httputil.Forbidden("the user does not belong to the requesting server")
	}
	version, err := f.rs.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, matrixError(err)
	}
	if err := f.mustBeResident(ctx, roomID); err != nil {
		return nil, err
	}
	if checkVersions {
		vers := r.URL.Query()["ver"]
		if len(vers) == 0 {
			vers = []string{"1"} // the spec's default
		}
		if !slices.Contains(vers, string(version)) {
			return nil, &versionError{Version: string(version)}
		}
	}
	content, _ := json.Marshal(map[string]string{"membership": membership})
	proto, version, err := f.rs.MakeEvent(ctx, roomID, roomserver.NewEvent{
		Sender: userID, Type: spec.MRoomMember, StateKey: &userID, Content: content,
	})
	if err != nil {
		return nil, matrixError(err)
	}
	// Build it once (signed by us, which the auth rules ignore) to check
	// the rules would let it in.
	ev, err := gomatrixserverlib.MustGetRoomVersion(version).NewEventBuilderFromProtoEvent(proto).
		Build(time.Now(), f.cfg.ServerName, f.cfg.KeyID, f.cfg.PrivateKey)
	if err != nil {
		return nil, httputil.BadJSON(err.Error())
	}
	if err := f.allowedNow(ctx, ev); err != nil {
		return nil, matrixError(err)
	}
	return map[string]any{"event": proto, "room_version": version}, nil
}

func (f *Federation) handleMakeJoin(r *http.Request, origin string, _ []byte) (any, error) {
	return f.makeMembership(r, origin, spec.Join, true)
}

func (f *Federation) handleMakeLeave(r *http.Request, origin string, _ []byte) (any, error) {
	return f.makeMembership(r, origin, spec.Leave, false)
}

// sendMembership checks a join or leave the requesting server signed for
// one of its users, signs it as the resident server, and stores it; the
// fan-out then passes it on to the other servers in the room.
func (f *Federation) sendMembership(r *http.Request, origin string, body []byte, membership string) (gomatrixserverlib.PDU, error) {
	ctx := r.Context()
	roomID, eventID := r.PathValue("roomId"), r.PathValue("eventId")
	version, err := f.rs.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, matrixError(err)
	}
	if err := f.mustBeResident(ctx, roomID); err != nil {
		return nil, err
	}
	ev, err := roomserver.ParseUntrusted(gomatrixserverlib.MustGetRoomVersion(version), body)
	if err != nil {
		return nil, httputil.BadJSON("invalid event: " + err.Error())
	}
	switch {
	case ev.RoomID().String() != roomID:
		return nil, httputil.BadJSON("the event's room_id is not the room in the path")
	case ev.EventID() != eventID:
		return nil, httputil.BadJSON("the event's ID is not the one in the path")
	case ev.Type() != spec.MRoomMember || ev.StateKey() == nil || !ev.StateKeyEquals(string(ev.SenderID())):
		return nil, httputil.BadJSON("not a membership event of its sender")
	case membershipOf(ev.Content()) != membership:
		return nil, httputil.BadJSON("membership must be " + membership)
	case serverOf(string(ev.SenderID())) != origin:
		return nil, httputil.Forbidden("the sender does not belong to the requesting server")
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, f.cfg.Verifier, userIDForSender); err != nil {
		return nil, httputil.Forbidden("signature check failed: " + err.Error())
	}
	signed := ev.Sign(string(f.cfg.ServerName), f.cfg.KeyID, f.cfg.PrivateKey)
	if old, err := f.db.EventByID(ctx, eventID); err == nil {
		// A retry: answer as the first time.
		if old.Rejected || (old.StreamPos == 0 && old.SnapshotNID != 0) {
			return nil, httputil.Forbidden("this " + membership + " was refused")
		}
		return signed, nil
	}
	if err := f.db.MarkForward(ctx, eventID); err != nil {
		return nil, err
	}
	res := f.rs.Input(ctx, []roomserver.InputEvent{{Origin: origin, RoomVersion: version, JSON: signed.JSON()}})[0]
	if res.Err != nil || res.SoftFailed {
		if err := f.db.UnmarkForward(ctx, eventID); err != nil {
			f.log.Warn("dropping a forward marker", "event", eventID, "err", err)
		}
	}
	var me *roomserver.MissingEventsError
	switch {
	case errors.As(res.Err, &me):
		return nil, httputil.BadJSON("the event refers to events this server does not have")
	case res.Err != nil:
		return nil, matrixError(res.Err)
	case res.SoftFailed:
		return nil, httputil.Forbidden("the room's current state does not allow this " + membership)
	}
	return signed, nil
}

// handleSendJoin serves PUT /v2/send_join: the join is stored and the
// answer holds the state before it and the auth chain of that state.
func (f *Federation) handleSendJoin(r *http.Request, origin string, body []byte) (any, error) {
	signed, err := f.sendMembership(r, origin, body, spec.Join)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	state, err := f.rs.StateBefore(ctx, signed.EventID())
	if err != nil {
		return nil, matrixError(err)
	}
	auth, err := f.rs.AuthChain(ctx, append(eventIDs(state), signed.EventID()))
	if err != nil {
		return nil, matrixError(err)
	}
	return sendJoinResponse{
		State: jsons(state), AuthChain: jsons(auth), Event: signed.JSON(),
		Origin: string(f.cfg.ServerName), MembersOmitted: false,
	}, nil
}

type sendJoinResponse struct {
	State          []json.RawMessage `json:"state"`
	AuthChain      []json.RawMessage `json:"auth_chain"`
	Event          json.RawMessage   `json:"event"`
	Origin         string            `json:"origin"`
	MembersOmitted bool              `json:"members_omitted"`
}

// handleSendLeave serves PUT /v2/send_leave.
func (f *Federation) handleSendLeave(r *http.Request, origin string, body []byte) (any, error) {
	if _, err := f.sendMembership(r, origin, body, spec.Leave); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// inviteRequest is the body of PUT /v2/invite.
type inviteRequest struct {
	RoomVersion     gomatrixserverlib.RoomVersion `json:"room_version"`
	Event           json.RawMessage               `json:"event"`
	InviteRoomState []json.RawMessage             `json:"invite_room_state"`
}

// maxInviteState bounds the stripped state an invite may carry.
const maxInviteState = 64

// handleInvite serves PUT /v2/invite/{roomId}/{eventId}: another server
// invites one of our users. The invite is countersigned and, for a room
// this server is not in, stored so the user's /sync shows it.
func (f *Federation) handleInvite(r *http.Request, origin string, body []byte) (any, error) {
	ctx := r.Context()
	var req inviteRequest
	if err := httputil.DecodeJSON(body, &req); err != nil {
		return nil, err
	}
	if !slices.Contains(roomserver.SupportedVersions, req.RoomVersion) {
		return nil, &versionError{Version: string(req.RoomVersion)}
	}
	ev, err := roomserver.ParseUntrusted(gomatrixserverlib.MustGetRoomVersion(req.RoomVersion), req.Event)
	if err != nil {
		return nil, httputil.BadJSON("invalid event: " + err.Error())
	}
	switch {
	case ev.RoomID().String() != r.PathValue("roomId"):
		return nil, httputil.BadJSON("the event's room_id is not the room in the path")
	case ev.EventID() != r.PathValue("eventId"):
		return nil, httputil.BadJSON("the event's ID is not the one in the path")
	case ev.Type() != spec.MRoomMember || ev.StateKey() == nil || membershipOf(ev.Content()) != spec.Invite:
		return nil, httputil.BadJSON("not an invite")
	case serverOf(*ev.StateKey()) != string(f.cfg.ServerName):
		return nil, httputil.Forbidden("the invitee is not a user of this server")
	case serverOf(string(ev.SenderID())) != origin:
		return nil, httputil.Forbidden("the inviter does not belong to the requesting server")
	case len(req.InviteRoomState) > maxInviteState:
		return nil, httputil.BadJSON("too much invite_room_state")
	}
	if ok, err := f.db.AccountExists(ctx, *ev.StateKey()); err != nil {
		return nil, err
	} else if !ok {
		return nil, httputil.NotFound("unknown user")
	}
	signed := ev.Sign(string(f.cfg.ServerName), f.cfg.KeyID, f.cfg.PrivateKey)
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, f.cfg.Verifier, userIDForSender); err != nil {
		return nil, httputil.Forbidden("signature check failed: " + err.Error())
	}
	if _, err := f.rs.StoreInvite(ctx, req.RoomVersion, signed, req.InviteRoomState); err != nil {
		return nil, matrixError(err)
	}
	return map[string]json.RawMessage{"event": signed.JSON()}, nil
}

// mustBeResident refuses to act for a room this server is not in (its
// state may be stale).
func (f *Federation) mustBeResident(ctx context.Context, roomID string) error {
	ok, err := f.residentIn(ctx, roomID)
	if err != nil {
		return err
	}
	if !ok {
		return httputil.NotFound("this server is not in the room")
	}
	return nil
}

// residentIn reports whether this server is in a room: it holds the
// room's state and one of its users is joined.
func (f *Federation) residentIn(ctx context.Context, roomID string) (bool, error) {
	row, err := f.db.RoomByID(ctx, roomID)
	if err != nil || row.SnapshotNID == 0 {
		return false, nil
	}
	n, err := f.db.JoinedLocalCount(ctx, row.NID, string(f.cfg.ServerName))
	return n > 0, err
}
