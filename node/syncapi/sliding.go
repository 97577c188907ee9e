package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"hearth/node/httputil"
	"hearth/node/storage"
)

// Simplified sliding sync (MSC4186), POST
// /_matrix/client/unstable/org.matrix.simplified_msc3575/sync. It is a
// different view of the same reads /sync does: the same snapshot reader,
// timeline scan, visibility, invite state, unread counts and ephemeral
// streams, picked per room by the client's lists and subscriptions. The
// position ("pos") is a sync Token with a sequence number naming what the
// connection (sliding_conn.go) had been sent as of it: rooms new to the
// connection come in full, rooms it holds with what changed since it got
// them, rooms the user left with their leave.

// slidingRequest is the request body.
type slidingRequest struct {
	ConnID            string                  `json:"conn_id"`
	Lists             map[string]slidingList  `json:"lists"`
	RoomSubscriptions map[string]roomParams   `json:"room_subscriptions"`
	Extensions        slidingExtensionsConfig `json:"extensions"`
}

// roomParams say what to send of each room.
type roomParams struct {
	RequiredState [][]string `json:"required_state"`
	TimelineLimit int        `json:"timeline_limit"`
}

// key tells two requests for a room apart: the same key, the same answer.
func (p roomParams) key() string {
	b, _ := json.Marshal(p)
	return string(b)
}

type slidingList struct {
	roomParams
	Ranges  [][]int64    `json:"ranges"`
	Filters *listFilters `json:"filters"`
}

type listFilters struct {
	IsDM     *bool `json:"is_dm"`
	IsInvite *bool `json:"is_invite"`
}

type extToggle struct {
	Enabled bool `json:"enabled"`
}

type slidingExtensionsConfig struct {
	ToDevice struct {
		Enabled bool   `json:"enabled"`
		Since   string `json:"since"`
	} `json:"to_device"`
	E2EE        extToggle `json:"e2ee"`
	AccountData extToggle `json:"account_data"`
	Receipts    extToggle `json:"receipts"`
	Typing      extToggle `json:"typing"`
}

// maxTimelineLimit caps a room's timeline_limit.
const maxTimelineLimit = 100

// maxConnIDLen caps conn_id.
const maxConnIDLen = 256

func unknownPos(msg string) *httputil.Error { return httputil.Errf(400, "M_UNKNOWN_POS", msg) }

// validate checks the body's shape beyond what JSON decoding does.
func (req *slidingRequest) validate() error {
	check := func(p *roomParams) error {
		if p.TimelineLimit < 0 {
			return httputil.InvalidParam("timeline_limit must not be negative")
		}
		p.TimelineLimit = min(p.TimelineLimit, maxTimelineLimit)
		for _, rs := range p.RequiredState {
			if len(rs) != 2 {
				return httputil.InvalidParam("required_state entries are [type, state_key]")
			}
		}
		return nil
	}
	if len(req.ConnID) > maxConnIDLen { // connections are kept in memory
		return httputil.InvalidParam("conn_id is too long")
	}
	for name, l := range req.Lists {
		for _, r := range l.Ranges {
			if len(r) != 2 || r[0] < 0 || r[1] < r[0] {
				return httputil.InvalidParam("list " + name + ": ranges are [start, end] with 0 <= start <= end")
			}
		}
		if err := check(&l.roomParams); err != nil {
			return err
		}
		req.Lists[name] = l
	}
	for id, p := range req.RoomSubscriptions {
		if err := check(&p); err != nil {
			return err
		}
		req.RoomSubscriptions[id] = p
	}
	return nil
}

// HandleSlidingSync serves POST
// /_matrix/client/unstable/org.matrix.simplified_msc3575/sync.
func (s *Syncer) HandleSlidingSync(w http.ResponseWriter, r *http.Request) {
	dev := httputil.DeviceFrom(r.Context())
	if dev == nil {
		httputil.WriteError(w, r, httputil.MissingToken("missing access token"))
		return
	}
	q := r.URL.Query()
	var timeout time.Duration
	if v := q.Get("timeout"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			httputil.WriteError(w, r, httputil.InvalidParam("timeout must be a non-negative integer"))
			return
		}
		timeout = min(time.Duration(min(ms, 1<<40))*time.Millisecond, s.cfg.MaxTimeout)
	}
	var req slidingRequest
	if err := httputil.ReadJSON(r, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := req.validate(); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	key := connKey{dev.UserID, dev.DeviceID, req.ConnID}
	conns := s.slidingConns()
	var since *Token
	var prev sentRooms
	if v := q.Get("pos"); v != "" {
		t, ok := splitPos(v)
		if !ok {
			httputil.WriteError(w, r, unknownPos("unknown pos"))
			return
		}
		// A pos of a connection this server forgot (restart, eviction):
		// the client must start the connection over.
		if prev, ok = conns.lookup(key, v); !ok {
			httputil.WriteError(w, r, unknownPos("unknown pos: the connection expired"))
			return
		}
		since = &t
	}
	// reply records what the answer sends under its new pos, then sends it.
	reply := func(res *slidingResponse) {
		res.Pos = makePos(res.token)
		conns.store(key, res.Pos, res.sent)
		httputil.WriteJSON(w, http.StatusOK, res)
	}
	var tdSince int64
	if req.Extensions.ToDevice.Enabled && req.Extensions.ToDevice.Since != "" {
		var err error
		if tdSince, err = parsePos(req.Extensions.ToDevice.Since); err != nil {
			httputil.WriteError(w, r, httputil.InvalidParam("malformed to_device since"))
			return
		}
	}
	ctx := r.Context()
	var deadline <-chan time.Time
	if timeout > 0 && since != nil {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	acked := false
	for {
		res, keys, seen, err := s.slidingOnce(ctx, dev, &req, since, prev, tdSince)
		if err != nil {
			if ctx.Err() == nil {
				httputil.WriteError(w, r, err)
			}
			return
		}
		if !acked && req.Extensions.ToDevice.Enabled {
			// The to-device since is valid (the read accepted it): what it
			// acknowledges can go. It writes, so it runs outside the read.
			acked = true
			s.ackToDevice(ctx, dev.UserID, dev.DeviceID, tdSince)
		}
		if since == nil || !res.empty() || deadline == nil {
			reply(res)
			return
		}
		wt := s.notify.wait(keys, seen, "")
		select {
		case <-wt.ch:
			s.notify.done(wt)
		case <-deadline:
			s.notify.done(wt)
			reply(res)
			return
		case <-ctx.Done():
			s.notify.done(wt)
			return
		}
	}
}

// slidingOnce computes one answer from one snapshot, with the notifier
// keys and positions a long-poll waits on. prev is what the connection
// had been sent as of sincePtr.
func (s *Syncer) slidingOnce(ctx context.Context, dev *httputil.Device, req *slidingRequest, sincePtr *Token, prev sentRooms, tdSince int64) (*slidingResponse, []string, Token, error) {
	user := dev.UserID
	rd, err := s.openReader(ctx, user, dev.DeviceID)
	if err != nil {
		return nil, nil, Token{}, err
	}
	defer rd.close()
	rd.walks = map[int64]*walk{}
	var since Token
	if sincePtr != nil {
		since = *sincePtr
	}
	to, ok, err := s.streamsNow(rd, user, since)
	if err != nil {
		return nil, nil, Token{}, err
	}
	if !ok || tdSince > to.ToDevice {
		return nil, nil, Token{}, unknownPos("pos is not one this server gave out")
	}
	if since.Typing > to.Typing { // in-memory streams restart with the process
		since.Typing = 0
	}

	all, err := rd.snap.UserRooms(user, false)
	if err != nil {
		return nil, nil, Token{}, err
	}
	ignored, err := rd.ignoredUsers()
	if err != nil {
		return nil, nil, Token{}, err
	}
	var rooms []storage.UserRoom
	var joined []string
	for _, ur := range all {
		switch ur.Membership {
		case "join":
			joined = append(joined, ur.RoomID)
			rooms = append(rooms, ur)
		case "invite":
			rooms = append(rooms, ur)
		}
	}
	// Most recent activity first; the room ID breaks ties so windows are
	// stable between requests.
	slices.SortFunc(rooms, func(a, b storage.UserRoom) int {
		if a.LatestPos != b.LatestPos {
			if a.LatestPos > b.LatestPos {
				return -1
			}
			return 1
		}
		if a.RoomID < b.RoomID {
			return -1
		}
		if a.RoomID > b.RoomID {
			return 1
		}
		return 0
	})

	res := newSlidingResponse()
	wanted := map[string]*roomParams{}
	var order []string
	want := func(id string, p roomParams) {
		w := wanted[id]
		if w == nil {
			w = &roomParams{}
			wanted[id] = w
			order = append(order, id)
		}
		w.TimelineLimit = max(w.TimelineLimit, p.TimelineLimit)
		w.RequiredState = append(w.RequiredState, p.RequiredState...)
	}
	var dms map[string]bool
	for name, l := range req.Lists {
		if l.Filters != nil && l.Filters.IsDM != nil && dms == nil {
			if dms, err = rd.directRooms(); err != nil {
				return nil, nil, Token{}, err
			}
		}
		var listed []storage.UserRoom
		for _, ur := range rooms {
			if l.Filters != nil {
				if l.Filters.IsInvite != nil && *l.Filters.IsInvite != (ur.Membership == "invite") {
					continue
				}
				if l.Filters.IsDM != nil && *l.Filters.IsDM != dms[ur.RoomID] {
					continue
				}
			}
			listed = append(listed, ur)
		}
		res.Lists[name] = slidingListResult{Count: len(listed)}
		for _, rg := range l.Ranges {
			for i := rg[0]; i <= rg[1] && i < int64(len(listed)); i++ {
				want(listed[i].RoomID, l.roomParams)
			}
		}
	}
	byID := make(map[string]storage.UserRoom, len(rooms))
	for _, ur := range rooms {
		byID[ur.RoomID] = ur
	}
	subs := make([]string, 0, len(req.RoomSubscriptions))
	for id := range req.RoomSubscriptions {
		subs = append(subs, id)
	}
	slices.Sort(subs)
	for _, id := range subs {
		if _, ok := byID[id]; ok { // rooms the user is not in are not shown
			want(id, req.RoomSubscriptions[id])
		}
	}
	// Rooms out of every window stay recorded: one that comes back gets
	// what changed since it was last sent, not all of it again.
	res.sent = maps.Clone(prev)
	if res.sent == nil {
		res.sent = sentRooms{}
	}
	for _, id := range order {
		ur := byID[id]
		rec, had := prev[id]
		limit := wanted[id].TimelineLimit
		params := wanted[id].key()
		if had && rec.params != params {
			// The client now asks for other state or a longer timeline:
			// the room goes again in full, a superset of what changed.
			had = false
		}
		if had && ur.LatestPos <= rec.pos && ur.Pos <= rec.pos {
			res.sent[id] = sentRoom{to.Room, limit, params} // nothing new in this room
			continue
		}
		if ur.Membership == "invite" && ignored[rd.inviter(ur)] {
			continue
		}
		sr, err := rd.slidingRoom(ur, wanted[id], had, rec.pos)
		if err != nil {
			return nil, nil, Token{}, err
		}
		if sr != nil {
			res.Rooms[id] = sr
			res.sent[id] = sentRoom{to.Room, limit, params}
		}
	}
	if err := rd.slidingLeft(res, prev, byID, all, dev); err != nil {
		return nil, nil, Token{}, err
	}
	if err := rd.slidingExtensions(res, req, dev, sincePtr, since, &to, tdSince, joined, all); err != nil {
		return nil, nil, Token{}, err
	}
	res.token = to
	keys := make([]string, 0, len(joined)+2)
	keys = append(keys, userKey(user), deviceKey(user, dev.DeviceID))
	for _, id := range joined {
		keys = append(keys, roomKey(id))
	}
	return res, keys, to, nil
}

// directRooms is the set of rooms the user's m.direct account data names.
func (rd *reader) directRooms() (map[string]bool, error) {
	b, err := rd.snap.GlobalAccountData(rd.user, "m.direct")
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	out := map[string]bool{}
	var m map[string][]string
	if len(b) > 0 && json.Unmarshal(b, &m) == nil {
		for _, ids := range m {
			for _, id := range ids {
				out[id] = true
			}
		}
	}
	return out, nil
}

// inviter is the sender of an invite ("" if it cannot be read).
func (rd *reader) inviter(ur storage.UserRoom) string {
	evs, err := rd.events(roomInfo{ur.RoomNID, ur.RoomID, ur.Version}, []int64{ur.EventNID})
	if err != nil || len(evs) == 0 {
		return ""
	}
	return evs[0].Sender
}

// slidingLeft reports the rooms the connection holds that the user is no
// longer joined to or invited to: a leave or ban since the room was sent
// comes with its timeline up to the leave (so the client sees it), then
// the room is forgotten by the connection, which never sends it again.
// Rooms the user never saw (left before they were sent) are not shown.
func (rd *reader) slidingLeft(res *slidingResponse, prev sentRooms, current map[string]storage.UserRoom, all []storage.UserRoom, dev *httputil.Device) error {
	var gone []string
	for id := range prev {
		if _, ok := current[id]; !ok {
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	slices.Sort(gone)
	byID := make(map[string]storage.UserRoom, len(all))
	for _, ur := range all {
		byID[ur.RoomID] = ur
	}
	for _, id := range gone {
		delete(res.sent, id)
		rec := prev[id]
		ur, ok := byID[id]
		if !ok || ur.Pos <= rec.pos || (ur.Membership != "leave" && ur.Membership != "ban") {
			continue
		}
		limit := max(rec.limit, 1) // at least the leave itself
		f := &Filter{}
		f.Room.Timeline.Limit = &limit
		scratch := newSyncResponse()
		rm := roomInfo{ur.RoomNID, ur.RoomID, ur.Version}
		if err := rd.left(scratch, &syncRequest{dev: dev, since: &Token{Room: rec.pos}, filter: f}, rm, ur, rec.pos, false); err != nil {
			return err
		}
		lr := scratch.Rooms.Leave[id]
		if lr == nil {
			continue
		}
		res.Rooms[id] = &slidingRoom{Timeline: lr.Timeline.Events, Limited: lr.Timeline.Limited,
			PrevBatch: lr.Timeline.PrevBatch, BumpStamp: ur.Pos}
	}
	return nil
}
