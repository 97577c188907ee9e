package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

func (a *API) registerDirectory(mux *http.ServeMux) {
	a.route(mux, "GET", "/directory/room/{roomAlias}", a.getAlias, false)
	a.route(mux, "PUT", "/directory/room/{roomAlias}", a.putAlias, true)
	a.route(mux, "DELETE", "/directory/room/{roomAlias}", a.deleteAlias, true)
	a.route(mux, "GET", "/rooms/{roomId}/aliases", a.roomAliases, true)
	a.route(mux, "GET", "/directory/list/room/{roomId}", a.getVisibility, false)
	a.route(mux, "PUT", "/directory/list/room/{roomId}", a.putVisibility, true)
	a.route(mux, "GET", "/publicRooms", a.publicRooms, false)
	a.route(mux, "POST", "/publicRooms", a.publicRooms, true)
}

// aliasParam checks the path's alias: M_INVALID_PARAM if malformed.
func aliasParam(r *http.Request) (string, error) {
	al := r.PathValue("roomAlias")
	if len(al) < 4 || al[0] != '#' || !strings.Contains(al, ":") || len(al) > 255 {
		return "", httputil.InvalidParam("invalid room alias")
	}
	return al, nil
}

func (a *API) getAlias(r *http.Request, _ *httputil.Device) (any, error) {
	al, err := aliasParam(r)
	if err != nil {
		return nil, err
	}
	roomID, _, err := a.db.RoomAlias(r.Context(), al)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("room alias not found")
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": roomID, "servers": []string{a.cfg.ServerName}}, nil
}

func (a *API) putAlias(r *http.Request, dev *httputil.Device) (any, error) {
	al, err := aliasParam(r)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(al, ":"+a.cfg.ServerName) {
		return nil, httputil.InvalidParam("aliases must be on this server")
	}
	var req struct {
		RoomID string `json:"room_id"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(req.RoomID, "!") {
		return nil, httputil.InvalidParam("invalid room_id")
	}
	// Only members may name a room: an alias is a pointer others trust.
	_, m, err := a.memberEvent(r.Context(), req.RoomID, dev.UserID)
	if err != nil {
		return nil, err
	}
	if m != roomserver.Join {
		return nil, httputil.Forbidden("you are not joined to this room")
	}
	err = a.db.CreateRoomAlias(r.Context(), al, req.RoomID, dev.UserID)
	if errors.Is(err, storage.ErrExists) {
		return nil, unknownErr(http.StatusConflict, "room alias already exists")
	}
	if err != nil {
		return nil, fmt.Errorf("create alias: %w", err)
	}
	return struct{}{}, nil
}

func (a *API) deleteAlias(r *http.Request, dev *httputil.Device) (any, error) {
	al, err := aliasParam(r)
	if err != nil {
		return nil, err
	}
	roomID, creator, err := a.db.RoomAlias(r.Context(), al)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("room alias not found")
	}
	if err != nil {
		return nil, err
	}
	// The alias's creator may delete it, and so may whoever may change
	// the room's canonical alias.
	if creator != dev.UserID {
		pl, level, err := a.powerLevels(r.Context(), roomID, dev.UserID)
		if err != nil {
			return nil, err
		}
		if level < pl.EventLevel(spec.MRoomCanonicalAlias, true) {
			return nil, httputil.Forbidden("you may not delete this alias")
		}
	}
	if err := a.db.DeleteRoomAlias(r.Context(), al); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("delete alias: %w", err)
	}
	return struct{}{}, nil
}

func (a *API) roomAliases(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	_, m, err := a.memberEvent(r.Context(), roomID, dev.UserID)
	if err != nil {
		return nil, err
	}
	if m != roomserver.Join {
		if wr, err := a.worldReadable(r.Context(), roomID); err != nil || !wr {
			if err != nil {
				return nil, err
			}
			return nil, httputil.Forbidden("you are not joined to this room")
		}
	}
	als, err := a.db.RoomAliases(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	if als == nil {
		als = []string{}
	}
	return map[string]any{"aliases": als}, nil
}

func (a *API) getVisibility(r *http.Request, _ *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	if _, err := a.rs.RoomVersion(r.Context(), roomID); err != nil {
		return nil, rsErr(err)
	}
	pub, err := a.db.RoomPublic(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	v := "private"
	if pub {
		v = "public"
	}
	return map[string]string{"visibility": v}, nil
}

func (a *API) putVisibility(r *http.Request, dev *httputil.Device) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Visibility string `json:"visibility"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Visibility != "public" && req.Visibility != "private" {
		return nil, httputil.InvalidParam("visibility must be public or private")
	}
	// Listing a room is like naming it: it needs the level to change the
	// canonical alias.
	pl, level, err := a.powerLevels(r.Context(), roomID, dev.UserID)
	if err != nil {
		return nil, err
	}
	if _, m, err := a.memberEvent(r.Context(), roomID, dev.UserID); err != nil || m != roomserver.Join {
		if err != nil {
			return nil, err
		}
		return nil, httputil.Forbidden("you are not joined to this room")
	}
	if level < pl.EventLevel(spec.MRoomCanonicalAlias, true) {
		return nil, httputil.Forbidden("you may not change this room's visibility")
	}
	if err := a.db.SetRoomPublic(r.Context(), roomID, req.Visibility == "public"); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// publicRoom is one entry of /publicRooms.
type publicRoom struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// maxPublicRoomsLimit caps one page of /publicRooms.
const maxPublicRoomsLimit = 500

func (a *API) publicRooms(r *http.Request, dev *httputil.Device) (any, error) {
	var req struct {
		Limit  int    `json:"limit"`
		Since  string `json:"since"`
		Server string `json:"server"`
		Filter struct {
			GenericSearchTerm string `json:"generic_search_term"`
		} `json:"filter"`
	}
	q := r.URL.Query()
	req.Server = q.Get("server")
	if r.Method == http.MethodPost {
		if err := readJSON(r, &req); err != nil {
			return nil, err
		}
	} else {
		req.Since = q.Get("since")
		if l := q.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil {
				return nil, httputil.InvalidParam("limit must be an integer")
			}
			req.Limit = n
		}
	}
	if req.Limit <= 0 || req.Limit > maxPublicRoomsLimit {
		req.Limit = maxPublicRoomsLimit
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(req.Since)
		if err != nil || n < 0 {
			return nil, httputil.InvalidParam("invalid since token")
		}
		offset = n
	}
	if req.Server != "" && req.Server != a.cfg.ServerName {
		// Other servers' directories come with federation.
		return map[string]any{"chunk": []publicRoom{}, "total_room_count_estimate": 0}, nil
	}
	ids, err := a.db.PublicRoomIDs(r.Context())
	if err != nil {
		return nil, err
	}
	term := strings.ToLower(req.Filter.GenericSearchTerm)
	rooms := make([]publicRoom, 0, len(ids))
	for _, id := range ids {
		pr, err := a.describeRoom(r.Context(), id)
		if err != nil {
			if isCode(rsErr(err), "M_NOT_FOUND") {
				continue
			}
			return nil, err
		}
		if term != "" && !strings.Contains(strings.ToLower(pr.Name+"\x00"+pr.Topic+"\x00"+pr.CanonicalAlias), term) {
			continue
		}
		rooms = append(rooms, pr)
	}
	sort.SliceStable(rooms, func(i, j int) bool {
		if rooms[i].NumJoinedMembers != rooms[j].NumJoinedMembers {
			return rooms[i].NumJoinedMembers > rooms[j].NumJoinedMembers
		}
		return rooms[i].RoomID < rooms[j].RoomID
	})
	resp := map[string]any{"total_room_count_estimate": len(rooms)}
	if offset > len(rooms) {
		offset = len(rooms)
	}
	end := min(offset+req.Limit, len(rooms))
	resp["chunk"] = rooms[offset:end]
	if end < len(rooms) {
		resp["next_batch"] = strconv.Itoa(end)
	}
	if offset > 0 {
		resp["prev_batch"] = strconv.Itoa(max(0, offset-req.Limit))
	}
	return resp, nil
}

// describeRoom summarises a room's current state for the directory.
func (a *API) describeRoom(ctx context.Context, roomID string) (publicRoom, error) {
	pr := publicRoom{RoomID: roomID}
	st, err := a.rs.CurrentState(ctx, roomID)
	if err != nil {
		return pr, err
	}
	for _, ev := range st {
		if ev.StateKey() == nil {
			continue
		}
		var c map[string]json.RawMessage
		if json.Unmarshal(ev.Content(), &c) != nil {
			continue
		}
		str := func(k string) string {
			var s string
			json.Unmarshal(c[k], &s)
			return s
		}
		switch ev.Type() {
		case spec.MRoomMember:
			if str("membership") == roomserver.Join {
				pr.NumJoinedMembers++
			}
		case spec.MRoomName:
			pr.Name = str("name")
		case spec.MRoomTopic:
			pr.Topic = str("topic")
		case spec.MRoomCanonicalAlias:
			pr.CanonicalAlias = str("alias")
		case "m.room.avatar":
			pr.AvatarURL = str("url")
		case spec.MRoomHistoryVisibility:
			pr.WorldReadable = str("history_visibility") == "world_readable"
		case spec.MRoomGuestAccess:
			pr.GuestCanJoin = str("guest_access") == "can_join"
		case spec.MRoomJoinRules:
			pr.JoinRule = str("join_rule")
		case spec.MRoomCreate:
			pr.RoomType = str("type")
		}
	}
	return pr, nil
}
