package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

// maxJoinServers is how many servers a join, leave or alias lookup tries.
const maxJoinServers = 5

// PerformJoin joins a local user to a room, by ID or alias. A room this
// server is in is joined locally; any other through a server in it
// (via, the alias's servers, the server that invited the user, the room
// ID's server; at most 5 tried): make_join, the join signed here,
// send_join, then the room's state and auth chain are checked and stored
// and the join enters the room's stream with that state before it. It
// returns the room ID. Errors are *httputil.Error where the client
// should see them (M_NOT_FOUND, M_FORBIDDEN, M_UNSUPPORTED_ROOM_VERSION,
// or the remote server's own error).
func (f *Federation) PerformJoin(ctx context.Context, roomIDOrAlias, userID string, via []string) (string, error) {
	if _, err := f.localUser(userID); err != nil {
		return "", err
	}
	roomID := roomIDOrAlias
	servers := append([]string{}, via...)
	switch {
	case strings.HasPrefix(roomIDOrAlias, "#"):
		id, aliasServers, err := f.resolveAlias(ctx, roomIDOrAlias)
		if err != nil {
			return "", err
		}
		roomID = id
		servers = append(aliasServers, servers...)
	case !strings.HasPrefix(roomIDOrAlias, "!"):
		return "", httputil.InvalidParam("not a room ID or alias")
	}
	content := f.memberContent(ctx, userID, spec.Join)
	if resident, err := f.residentIn(ctx, roomID); err != nil {
		return "", err
	} else if resident {
		_, err := f.rs.Send(ctx, roomID, roomserver.NewEvent{Sender: userID, Type: spec.MRoomMember, StateKey: &userID, Content: content})
		return roomID, matrixError(err)
	}
	servers = f.candidates(ctx, roomID, userID, servers)
	if len(servers) == 0 {
		return "", httputil.NotFound("no server known to be in the room")
	}
	var errs []error
	for _, s := range servers {
		err := f.joinVia(ctx, s, roomID, userID, content)
		if err == nil {
			return roomID, nil
		}
		f.log.Info("remote join failed", "room", roomID, "via", s, "err", err)
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return "", firstMatrixError(errs)
}

// resolveAlias looks an alias up here or on its server.
func (f *Federation) resolveAlias(ctx context.Context, alias string) (string, []string, error) {
	_, server, err := gomatrixserverlib.SplitID('#', alias)
	if err != nil {
		return "", nil, httputil.InvalidParam("invalid room alias")
	}
	if server == f.cfg.ServerName {
		roomID, _, err := f.db.RoomAlias(ctx, alias)
		if errors.Is(err, storage.ErrNotFound) {
			return "", nil, httputil.NotFound("unknown room alias")
		}
		return roomID, nil, err
	}
	resp, err := f.client.LookupRoomAlias(ctx, f.cfg.ServerName, server, alias)
	if err != nil {
		return "", nil, remoteError(string(server), err)
	}
	out := []string{string(server)}
	for _, s := range resp.Servers {
		out = append(out, string(s))
	}
	return resp.RoomID, out, nil
}

// memberContent is a membership's content with the user's profile.
func (f *Federation) memberContent(ctx context.Context, userID, membership string) json.RawMessage {
	c := map[string]string{"membership": membership}
	if p, err := f.db.Profile(ctx, userID); err == nil {
		if p.DisplayName != "" {
			c["displayname"] = p.DisplayName
		}
		if p.AvatarURL != "" {
			c["avatar_url"] = p.AvatarURL
		}
	}
	b, _ := json.Marshal(c)
	return b
}

// candidates are the servers to reach a room through: those given, the
// one that invited the user, the room ID's own; deduplicated, this
// server left out, at most maxJoinServers.
func (f *Federation) candidates(ctx context.Context, roomID, userID string, given []string) []string {
	all := append([]string{}, given...)
	if nid, err := f.db.RoomNIDOf(ctx, roomID); err == nil {
		if m, evNID, err := f.db.MembershipEvent(ctx, userID, nid); err == nil && (m == spec.Invite || m == spec.Knock) {
			if evs, err := f.db.EventsByNID(ctx, []int64{evNID}); err == nil && len(evs) == 1 {
				var ev streamEvent
				if json.Unmarshal(evs[0].JSON, &ev) == nil {
					all = append(all, serverOf(ev.Sender))
				}
			}
		}
	}
	all = append(all, roomIDServer(roomID))
	var out []string
	for _, s := range all {
		if s != "" && s != string(f.cfg.ServerName) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) > maxJoinServers {
		out = out[:maxJoinServers]
	}
	return out
}

// joinVia joins a room through one server.
func (f *Federation) joinVia(ctx context.Context, server, roomID, userID string, content json.RawMessage) error {
	mj, err := f.client.MakeJoin(ctx, f.cfg.ServerName, spec.ServerName(server), roomID, userID)
	if err != nil {
		return remoteError(server, err)
	}
	version := mj.RoomVersion
	if !slices.Contains(roomserver.SupportedVersions, version) {
		return httputil.Errf(400, "M_UNSUPPORTED_ROOM_VERSION", fmt.Sprintf("room version %q is not supported here", version))
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(version)
	proto := mj.JoinEvent
	if proto.Type != spec.MRoomMember || proto.StateKey == nil || *proto.StateKey != userID ||
		proto.SenderID != userID || proto.RoomID != roomID {
		return httputil.Errf(502, "M_UNKNOWN", server+" offered a malformed join event")
	}
	proto.Content = mergeContent(proto.Content, content)
	ev, err := roomserver.SignEvent(verImpl, verImpl.NewEventBuilderFromProtoEvent(&proto), time.Now(), f.cfg.ServerName, f.cfg.KeyID, f.cfg.PrivateKey)
	if err != nil {
		return httputil.Errf(502, "M_UNKNOWN", "building the join from "+server+": "+err.Error())
	}
	sj, err := f.client.SendJoin(ctx, f.cfg.ServerName, spec.ServerName(server), ev)
	if err != nil {
		return remoteError(server, err)
	}
	if len(sj.Event) > 0 {
		// The resident server's copy carries its signature too.
		if p, err := roomserver.ParseUntrusted(verImpl, sj.Event); err == nil && p.EventID() == ev.EventID() {
			ev = p
		}
	}
	if sj.MembersOmitted {
		return httputil.Errf(502, "M_UNKNOWN", server+" sent partial state")
	}
	if err := checkState(sj.StateEvents, version); err != nil {
		return httputil.Errf(502, "M_UNKNOWN", server+" sent bad state: "+err.Error())
	}
	// The state and its auth chain, stored as outliers; then the join,
	// with the state (what of it was valid) before it.
	raws := make([][]byte, 0, len(sj.StateEvents)+len(sj.AuthEvents))
	for _, e := range sj.StateEvents {
		raws = append(raws, e)
	}
	for _, e := range sj.AuthEvents {
		raws = append(raws, e)
	}
	g := &gap{origin: server, roomID: roomID, version: version}
	stored := f.inputOutlierJSON(ctx, g, raws)
	ids := make([]string, 0, len(sj.StateEvents))
	for _, id := range stored[:len(sj.StateEvents)] {
		if id != "" {
			ids = append(ids, id)
		}
	}
	res := f.input(ctx, g, ev, ids)
	if res.Err != nil {
		return matrixError(res.Err)
	}
	return nil
}

// checkState refuses a send_join state that cannot be a room's: without
// the room's create event, of another version, or with two events for one
// (type, state key).
func checkState(state []spec.RawJSON, version gomatrixserverlib.RoomVersion) error {
	seen := map[gomatrixserverlib.StateKeyTuple]bool{}
	hasCreate := false
	for _, raw := range state {
		var e probe
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("unreadable event: %w", err)
		}
		if e.StateKey == nil {
			return fmt.Errorf("a %s event has no state key", e.Type)
		}
		k := gomatrixserverlib.StateKeyTuple{EventType: e.Type, StateKey: *e.StateKey}
		if seen[k] {
			return fmt.Errorf("two events for (%s, %s)", k.EventType, k.StateKey)
		}
		seen[k] = true
		if e.Type == spec.MRoomCreate && *e.StateKey == "" {
			var c struct {
				RoomVersion string `json:"room_version"`
			}
			json.Unmarshal(e.Content, &c)
			if c.RoomVersion == "" {
				c.RoomVersion = "1"
			}
			if c.RoomVersion != string(version) {
				return fmt.Errorf("create event says version %s, not %s", c.RoomVersion, version)
			}
			hasCreate = true
		}
	}
	if !hasCreate {
		return errors.New("no create event")
	}
	return nil
}

// mergeContent adds ours (membership, profile) to the content a resident
// server proposed.
func mergeContent(proposed, ours []byte) []byte {
	m := map[string]any{}
	json.Unmarshal(proposed, &m)
	var o map[string]any
	json.Unmarshal(ours, &o)
	for k, v := range o {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// PerformInvite invites a user to a room this server is in. A local
// invitee is invited locally; a remote one's server must countersign the
// invite (/invite) before it is stored and sent to the room.
func (f *Federation) PerformInvite(ctx context.Context, roomID, inviter, invitee string) error {
	if _, err := f.localUser(inviter); err != nil {
		return err
	}
	target, err := spec.NewUserID(invitee, true)
	if err != nil {
		return httputil.InvalidParam("invalid user ID")
	}
	content, _ := json.Marshal(map[string]string{"membership": spec.Invite})
	ne := roomserver.NewEvent{Sender: inviter, Type: spec.MRoomMember, StateKey: &invitee, Content: content}
	if target.Domain() == f.cfg.ServerName {
		_, err := f.rs.Send(ctx, roomID, ne)
		return matrixError(err)
	}
	proto, version, err := f.rs.MakeEvent(ctx, roomID, ne)
	if err != nil {
		return matrixError(err)
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(version)
	ev, err := roomserver.SignEvent(verImpl, verImpl.NewEventBuilderFromProtoEvent(proto), time.Now(), f.cfg.ServerName, f.cfg.KeyID, f.cfg.PrivateKey)
	if err != nil {
		return matrixError(&roomserver.BadEventError{Reason: err.Error()})
	}
	if err := f.allowedNow(ctx, ev); err != nil {
		return matrixError(err)
	}
	req, err := fclient.NewInviteV2Request(ev, f.inviteState(ctx, roomID, inviter))
	if err != nil {
		return err
	}
	resp, err := f.client.SendInviteV2(ctx, f.cfg.ServerName, target.Domain(), req)
	if err != nil {
		return remoteError(string(target.Domain()), err)
	}
	signed, err := roomserver.ParseUntrusted(verImpl, resp.Event)
	if err != nil || signed.EventID() != ev.EventID() {
		return httputil.Errf(502, "M_UNKNOWN", string(target.Domain())+" returned a different invite")
	}
	res := f.rs.Input(ctx, []roomserver.InputEvent{{Origin: string(f.cfg.ServerName), RoomVersion: version, JSON: signed.JSON()}})[0]
	return matrixError(res.Err)
}

// strippedTypes are the state an invite carries for the invitee's client.
var strippedTypes = []string{
	spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, "m.room.avatar",
	"m.room.encryption", spec.MRoomCanonicalAlias, spec.MRoomTopic,
}

func (f *Federation) inviteState(ctx context.Context, roomID, inviter string) []gomatrixserverlib.InviteStrippedState {
	var out []gomatrixserverlib.InviteStrippedState
	add := func(typ, key string) {
		if ev, err := f.rs.StateEvent(ctx, roomID, typ, key); err == nil && ev != nil {
			out = append(out, gomatrixserverlib.NewInviteStrippedState(ev))
		}
	}
	for _, t := range strippedTypes {
		add(t, "")
	}
	add(spec.MRoomMember, inviter)
	return out
}

// PerformLeave makes a local user leave a room. In a room this server is
// in that is a local leave; otherwise (rejecting an invite to a room
// elsewhere) the leave goes through a server in the room (make_leave,
// send_leave) and is then recorded here.
func (f *Federation) PerformLeave(ctx context.Context, roomID, userID string, via []string) error {
	if _, err := f.localUser(userID); err != nil {
		return err
	}
	ne := roomserver.NewEvent{Sender: userID, Type: spec.MRoomMember, StateKey: &userID, Content: f.memberContent(ctx, userID, spec.Leave)}
	if resident, err := f.residentIn(ctx, roomID); err != nil {
		return err
	} else if resident {
		_, err := f.rs.Send(ctx, roomID, ne)
		return matrixError(err)
	}
	servers := f.candidates(ctx, roomID, userID, via)
	if len(servers) == 0 {
		return httputil.NotFound("no server known to be in the room")
	}
	var errs []error
	for _, s := range servers {
		err := f.leaveVia(ctx, s, roomID, userID)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return firstMatrixError(errs)
}

func (f *Federation) leaveVia(ctx context.Context, server, roomID, userID string) error {
	ml, err := f.client.MakeLeave(ctx, f.cfg.ServerName, spec.ServerName(server), roomID, userID)
	if err != nil {
		return remoteError(server, err)
	}
	if !slices.Contains(roomserver.SupportedVersions, ml.RoomVersion) {
		return httputil.Errf(400, "M_UNSUPPORTED_ROOM_VERSION", fmt.Sprintf("room version %q is not supported here", ml.RoomVersion))
	}
	proto := ml.LeaveEvent
	if proto.Type != spec.MRoomMember || proto.StateKey == nil || *proto.StateKey != userID ||
		proto.SenderID != userID || proto.RoomID != roomID {
		return httputil.Errf(502, "M_UNKNOWN", server+" offered a malformed leave event")
	}
	proto.Content = mergeContent(proto.Content, []byte(`{"membership":"leave"}`))
	ev, err := gomatrixserverlib.MustGetRoomVersion(ml.RoomVersion).NewEventBuilderFromProtoEvent(&proto).
		Build(time.Now(), f.cfg.ServerName, f.cfg.KeyID, f.cfg.PrivateKey)
	if err != nil {
		return httputil.Errf(502, "M_UNKNOWN", "building the leave from "+server+": "+err.Error())
	}
	if err := f.client.SendLeave(ctx, f.cfg.ServerName, spec.ServerName(server), ev); err != nil {
		return remoteError(server, err)
	}
	if _, err := f.rs.StoreRemoteLeave(ctx, ml.RoomVersion, ev); err != nil {
		return matrixError(err)
	}
	return nil
}

// remoteError is another server's refusal as the client should see it:
// its Matrix error as is, anything else (unreachable, garbage) 502.
func remoteError(server string, err error) error {
	var he gomatrix.HTTPError
	if errors.As(err, &he) {
		var re gomatrix.RespError
		if errors.As(he.WrappedError, &re) && re.ErrCode != "" {
			return httputil.Errf(he.Code, re.ErrCode, server+": "+re.Err)
		}
		return httputil.Errf(502, "M_UNKNOWN", fmt.Sprintf("%s answered %d", server, he.Code))
	}
	return httputil.Errf(502, "M_UNKNOWN", "could not reach "+server+": "+err.Error())
}

// firstMatrixError picks the most telling of several servers' errors: a
// refusal by a server over an unreachable one.
func firstMatrixError(errs []error) error {
	for _, err := range errs {
		var me *httputil.Error
		if errors.As(err, &me) && me.Status < 500 {
			return err
		}
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return httputil.NotFound("no server to try")
}
