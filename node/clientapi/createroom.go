package clientapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"unicode"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

type stateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

type createRoomRequest struct {
	Visibility                string                     `json:"visibility"`
	RoomAliasName             string                     `json:"room_alias_name"`
	Name                      *string                    `json:"name"`
	Topic                     *string                    `json:"topic"`
	Invite                    []string                   `json:"invite"`
	Invite3PID                []json.RawMessage          `json:"invite_3pid"`
	RoomVersion               string                     `json:"room_version"`
	CreationContent           map[string]json.RawMessage `json:"creation_content"`
	InitialState              []stateEvent               `json:"initial_state"`
	Preset                    string                     `json:"preset"`
	IsDirect                  bool                       `json:"is_direct"`
	PowerLevelContentOverride map[string]json.RawMessage `json:"power_level_content_override"`
}

// maxInvites bounds the invite list of one /createRoom (each is an event
// in the one creation transaction).
const maxInvites = 100

func (a *API) createRoom(r *http.Request, dev *httputil.Device) (any, error) {
	var req createRoomRequest
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	plan, err := a.planRoom(r, dev.UserID, &req)
	if err != nil {
		return nil, err
	}
	// The alias is reserved before the room exists, so a name taken
	// meanwhile fails the request before anything is written; the
	// reservation is dropped if creation fails.
	if plan.alias != "" {
		err := a.db.ReserveRoomAlias(r.Context(), plan.alias, dev.UserID)
		if errors.Is(err, storage.ErrExists) {
			return nil, roomInUse("room alias already taken")
		}
		if err != nil {
			return nil, fmt.Errorf("reserve alias: %w", err)
		}
	}
	roomID, err := a.rs.CreateRoom(r.Context(), plan.version, dev.UserID, plan.createContent, plan.events)
	if err != nil {
		if plan.alias != "" {
			if derr := a.db.DeleteRoomAlias(r.Context(), plan.alias); derr != nil {
				slog.Error("drop alias reservation", "alias", plan.alias, "err", derr)
			}
		}
		return nil, rsErr(err)
	}
	if plan.alias != "" {
		if err := a.db.SetRoomAlias(r.Context(), plan.alias, roomID); err != nil {
			return nil, fmt.Errorf("room %s created but its alias failed: %w", roomID, err)
		}
	}
	if req.Visibility == "public" {
		if err := a.db.SetRoomPublic(r.Context(), roomID, true); err != nil {
			return nil, fmt.Errorf("room %s created but publishing it failed: %w", roomID, err)
		}
	}
	resp := map[string]string{"room_id": roomID}
	if plan.alias != "" {
		resp["room_alias"] = plan.alias
	}
	return resp, nil
}

type roomPlan struct {
	version       gomatrixserverlib.RoomVersion
	createContent json.RawMessage
	events        []roomserver.NewEvent
	alias         string
}

// planRoom validates a /createRoom request and builds its events in the
// spec's order: (create), the creator's join, power levels, canonical
// alias, the preset's join rules / history visibility / guest access,
// initial_state, name, topic, invites.
func (a *API) planRoom(r *http.Request, creator string, req *createRoomRequest) (*roomPlan, error) {
	plan := &roomPlan{version: gomatrixserverlib.RoomVersion(req.RoomVersion)}
	if plan.version == "" {
		plan.version = gomatrixserverlib.RoomVersion(a.cfg.DefaultRoomVersion)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(plan.version)
	supported := false
	for _, v := range roomserver.SupportedVersions {
		supported = supported || v == plan.version
	}
	if err != nil || !supported {
		return nil, unsupportedVersion(string(plan.version))
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return nil, httputil.InvalidParam("visibility must be public or private")
	}
	preset := req.Preset
	if preset == "" {
		preset = "private_chat"
		if req.Visibility == "public" {
			preset = "public_chat"
		}
	}
	if preset != "private_chat" && preset != "public_chat" && preset != "trusted_private_chat" {
		return nil, httputil.InvalidParam("unknown preset " + preset)
	}
	if len(req.Invite3PID) > 0 {
		return nil, httputil.Errf(400, "M_UNRECOGNIZED", "third-party invites are not supported")
	}
	if len(req.Invite) > maxInvites {
		return nil, httputil.InvalidParam(fmt.Sprintf("at most %d invites", maxInvites))
	}
	invites := make([]string, 0, len(req.Invite))
	seen := map[string]bool{creator: true}
	for _, u := range req.Invite {
		if _, err := userIDParam(u); err != nil {
			return nil, err
		}
		if !seen[u] {
			seen[u] = true
			invites = append(invites, u)
		}
	}
	if req.RoomAliasName != "" {
		if strings.ContainsAny(req.RoomAliasName, ":#") || strings.IndexFunc(req.RoomAliasName, unicode.IsSpace) >= 0 {
			return nil, httputil.InvalidParam("room_alias_name must not contain ':', '#' or whitespace")
		}
		plan.alias = "#" + req.RoomAliasName + ":" + a.cfg.ServerName
		if len(plan.alias) > 255 {
			return nil, httputil.InvalidParam("room alias longer than 255 bytes")
		}
	}

	// Creators of a v12 room outrank everyone and must not be listed in
	// power levels; trusted_private_chat makes invitees co-creators there
	// (and room admins in older versions).
	privileged := verImpl.PrivilegedCreators()
	cc := req.CreationContent
	if cc == nil {
		cc = map[string]json.RawMessage{}
	}
	creators := map[string]bool{creator: true}
	if privileged {
		if raw, ok := cc["additional_creators"]; ok {
			var extra []string
			if err := json.Unmarshal(raw, &extra); err != nil {
				return nil, httputil.BadJSON("additional_creators must be a list of user IDs")
			}
			for _, u := range extra {
				if _, err := userIDParam(u); err != nil {
					return nil, err
				}
				creators[u] = true
			}
		}
		if preset == "trusted_private_chat" && len(invites) > 0 {
			extra := []string{}
			for u := range creators {
				if u != creator {
					extra = append(extra, u)
				}
			}
			for _, u := range invites {
				if !creators[u] {
					creators[u] = true
					extra = append(extra, u)
				}
			}
			cc["additional_creators"] = mustJSON(extra)
		}
	}
	delete(cc, "room_version") // the roomserver writes the version it runs
	plan.createContent = mustJSON(cc)

	// Initial state entries, validated; ones the steps below also set
	// replace those steps' content in place.
	initial := map[[2]string]json.RawMessage{}
	var order [][2]string
	for _, ev := range req.InitialState {
		if ev.Type == "" {
			return nil, httputil.BadJSON("initial_state events need a type")
		}
		if !isObject(ev.Content) {
			return nil, httputil.BadJSON("initial_state content must be an object")
		}
		if ev.Type == spec.MRoomCreate || ev.Type == spec.MRoomMember {
			return nil, httputil.BadJSON("initial_state cannot hold " + ev.Type + " events")
		}
		k := [2]string{ev.Type, ev.StateKey}
		if _, dup := initial[k]; !dup {
			order = append(order, k)
		}
		initial[k] = ev.Content
	}
	take := func(typ string, def json.RawMessage) json.RawMessage {
		k := [2]string{typ, ""}
		if c, ok := initial[k]; ok {
			delete(initial, k)
			return c
		}
		return def
	}
	state := func(typ, key string, content json.RawMessage) {
		k := key
		plan.events = append(plan.events, roomserver.NewEvent{Sender: creator, Type: typ, StateKey: &k, Content: content})
	}

	p, err := a.db.Profile(r.Context(), creator)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	state(spec.MRoomMember, creator, memberContent(roomserver.Join, p, ""))

	pl, err := powerLevelContent(creator, preset, invites, privileged, creators,
		take(spec.MRoomPowerLevels, nil), req.PowerLevelContentOverride)
	if err != nil {
		return nil, err
	}
	state(spec.MRoomPowerLevels, "", pl)

	if plan.alias != "" {
		delete(initial, [2]string{spec.MRoomCanonicalAlias, ""})
		state(spec.MRoomCanonicalAlias, "", mustJSON(map[string]string{"alias": plan.alias}))
	}
	joinRule := "invite"
	if preset == "public_chat" {
		joinRule = "public"
	}
	state(spec.MRoomJoinRules, "", take(spec.MRoomJoinRules, mustJSON(map[string]string{"join_rule": joinRule})))
	state(spec.MRoomHistoryVisibility, "", take(spec.MRoomHistoryVisibility, mustJSON(map[string]string{"history_visibility": "shared"})))
	if preset != "public_chat" {
		state(spec.MRoomGuestAccess, "", take(spec.MRoomGuestAccess, mustJSON(map[string]string{"guest_access": "can_join"})))
	}
	if req.Name != nil {
		delete(initial, [2]string{spec.MRoomName, ""})
	}
	if req.Topic != nil {
		delete(initial, [2]string{spec.MRoomTopic, ""})
	}
	for _, k := range order {
		if c, ok := initial[k]; ok {
			state(k[0], k[1], c)
		}
	}
	if req.Name != nil {
		state(spec.MRoomName, "", mustJSON(map[string]string{"name": *req.Name}))
	}
	if req.Topic != nil {
		state(spec.MRoomTopic, "", mustJSON(map[string]any{
			"topic":   *req.Topic,
			"m.topic": map[string]any{"m.text": []any{map[string]string{"body": *req.Topic, "mimetype": "text/plain"}}},
		}))
	}
	for _, u := range invites {
		c := map[string]any{"membership": roomserver.Invite}
		if req.IsDirect {
			c["is_direct"] = true
		}
		state(spec.MRoomMember, u, mustJSON(c))
	}
	return plan, nil
}

// powerLevelContent builds the room's first m.room.power_levels content:
// the defaults (or an initial_state power levels event), with the
// request's override applied key by key on top.
func powerLevelContent(creator, preset string, invites []string, privileged bool, creators map[string]bool,
	base json.RawMessage, override map[string]json.RawMessage) (json.RawMessage, error) {
	pl := map[string]json.RawMessage{}
	if base != nil {
		if err := json.Unmarshal(base, &pl); err != nil {
			return nil, httputil.BadJSON("invalid power levels in initial_state")
		}
	} else {
		users := map[string]int64{}
		if !privileged {
			users[creator] = 100
			if preset == "trusted_private_chat" {
				for _, u := range invites {
					users[u] = 100
				}
			}
		}
		tombstone := int64(100)
		if privileged {
			tombstone = 150 // only creators may upgrade a v12 room
		}
		invite := 50
		if preset != "public_chat" {
			invite = 0
		}
		pl = map[string]json.RawMessage{
			"users":          mustJSON(users),
			"users_default":  mustJSON(0),
			"events_default": mustJSON(0),
			"state_default":  mustJSON(50),
			"ban":            mustJSON(50),
			"kick":           mustJSON(50),
			"redact":         mustJSON(50),
			"invite":         mustJSON(invite),
			"events": mustJSON(map[string]int64{
				spec.MRoomName:              50,
				spec.MRoomPowerLevels:       100,
				spec.MRoomHistoryVisibility: 100,
				spec.MRoomCanonicalAlias:    50,
				"m.room.avatar":             50,
				"m.room.tombstone":          tombstone,
				"m.room.server_acl":         100,
				spec.MRoomEncryption:        100,
			}),
			"notifications": mustJSON(map[string]int64{"room": 50}),
		}
	}
	for k, v := range override {
		pl[k] = v
	}
	if privileged {
		var users map[string]json.RawMessage
		if raw, ok := pl["users"]; ok && json.Unmarshal(raw, &users) == nil {
			for u := range users {
				if creators[u] {
					return nil, httputil.BadJSON("room creators cannot be given a power level in this room version: they outrank every level")
				}
			}
		}
	}
	return mustJSON(pl), nil
}
