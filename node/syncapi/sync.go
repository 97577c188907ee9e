package syncapi

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"hearth/node/httputil"
	"hearth/node/storage"
)

// syncRequest is a parsed GET /sync.
type syncRequest struct {
	dev         *httputil.Device
	since       *Token // nil: initial sync
	filter      *Filter
	fullState   bool
	timeout     time.Duration
	setPresence string
	// lazyKey is set when the filter lazy-loads members without
	// include_redundant_members: what this device has been sent is
	// tracked under it (see lazySent).
	lazyKey string
}

// HandleSync serves GET /_matrix/client/v3/sync.
func (s *Syncer) HandleSync(w http.ResponseWriter, r *http.Request) {
	req, err := s.parseSyncRequest(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ctx := r.Context()
	// Presence first: the sync itself may change it, and must not hold a
	// snapshot while it notifies.
	defer s.syncStarted(req.dev.UserID, req.setPresence)()
	var deadline <-chan time.Time
	if req.timeout > 0 {
		t := time.NewTimer(req.timeout)
		defer t.Stop()
		deadline = t.C
	}
	acked := req.since == nil
	for {
		res, keys, seen, err := s.syncOnce(ctx, req)
		if err != nil {
			if ctx.Err() == nil { // else the client is gone: nobody to answer
				httputil.WriteError(w, r, err)
			}
			return
		}
		if !acked { // the token is valid: what it acknowledges can go
			acked = true
			s.ackToDevice(ctx, req.dev.UserID, req.dev.DeviceID, req.since.ToDevice)
		}
		// An initial or full-state sync answers at once, as does one with
		// news or no time to wait.
		if req.since == nil || req.fullState || !res.empty() || deadline == nil {
			writeRaw(w, res.appendJSON(nil))
			return
		}
		wt := s.notify.wait(keys, seen, req.dev.UserID)
		select {
		case <-wt.ch:
			s.notify.done(wt)
			if wt.echo {
				// Woken by what its own user sent: the client has the
				// send's answer already, and the fan-out taking the event
				// to other servers was woken by the same commit. In the
				// browser, where goroutines share one thread and Go's
				// scheduler runs the one woken last first, this lets the
				// fan-out go first.
				runtime.Gosched()
			}
		case <-deadline:
			s.notify.done(wt)
			writeRaw(w, res.appendJSON(nil))
			return
		case <-ctx.Done():
			s.notify.done(wt)
			return
		}
	}
}

func (s *Syncer) parseSyncRequest(r *http.Request) (*syncRequest, error) {
	dev := httputil.DeviceFrom(r.Context())
	if dev == nil {
		return nil, httputil.MissingToken("missing access token")
	}
	q := r.URL.Query()
	req := &syncRequest{dev: dev}
	if v := q.Get("since"); v != "" {
		t, err := ParseToken(v)
		if err != nil {
			return nil, httputil.InvalidParam("malformed since token")
		}
		req.since = &t
	}
	if v := q.Get("timeout"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return nil, httputil.InvalidParam("timeout must be a non-negative integer")
		}
		req.timeout = min(time.Duration(min(ms, 1<<40))*time.Millisecond, s.cfg.MaxTimeout)
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.fullState = true
	default:
		return nil, httputil.InvalidParam("full_state must be true or false")
	}
	switch req.setPresence = q.Get("set_presence"); req.setPresence {
	case "", "online", "offline", "unavailable":
	default:
		return nil, httputil.InvalidParam("set_presence must be online, offline or unavailable")
	}
	f, err := s.loadFilter(r.Context(), dev.UserID, q.Get("filter"))
	if err != nil {
		return nil, err
	}
	req.filter = f
	if sf := &f.Room.State; sf.LazyLoadMembers && !sf.IncludeRedundantMembers {
		req.lazyKey = lazyKey(dev.UserID, dev.DeviceID, q.Get("filter"))
	}
	return req, nil
}

// loadFilter resolves the filter parameter: inline JSON, a stored filter
// ID, or nothing (the empty filter).
func (s *Syncer) loadFilter(ctx context.Context, userID, param string) (*Filter, error) {
	if param == "" {
		return &Filter{}, nil
	}
	if strings.HasPrefix(param, "{") {
		f, err := ParseFilter([]byte(param))
		if err != nil {
			return nil, httputil.InvalidParam(err.Error())
		}
		return f, nil
	}
	id, err := strconv.ParseInt(param, 10, 64)
	if err != nil {
		return nil, httputil.NotFound("unknown filter")
	}
	key := filterKey{userID, id}
	s.filterMu.Lock()
	f := s.filters[key]
	s.filterMu.Unlock()
	if f != nil {
		return f, nil
	}
	b, err := s.db.Filter(ctx, userID, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("unknown filter")
	}
	if err != nil {
		return nil, err
	}
	if f, err = ParseFilter(b); err != nil {
		return nil, httputil.InvalidParam("stored " + err.Error())
	}
	s.filterMu.Lock()
	if len(s.filters) >= 4096 { // stored filters are immutable; a crude bound is enough
		clear(s.filters)
	}
	s.filters[key] = f
	s.filterMu.Unlock()
	return f, nil
}

// streamsNow moves since to where every stream stands for user in rd's
// snapshot, and tells whether since could have come from this server: no
// stored stream of it is ahead of now (the in-memory typing and presence
// streams restart with the process, so callers judge those). It reads
// the reader's position (see openReader).
func (s *Syncer) streamsNow(rd *reader, user string, since Token) (to Token, ok bool, err error) {
	to = since
	pos, err := rd.snap.Positions(user)
	if err != nil {
		return Token{}, false, err
	}
	rd.readPos, to.Room = pos.Room, pos.Room
	to.AccountData, to.Receipt, to.ToDevice, to.DeviceList = pos.AccountData, pos.Receipt, pos.ToDevice, pos.DeviceList
	rd.accountDataPos = pos.AccountData
	to.Typing, to.Presence = s.typing.current(), s.presence.current()
	ok = since.Room <= to.Room && since.AccountData <= to.AccountData && since.Receipt <= to.Receipt &&
		since.ToDevice <= to.ToDevice && since.DeviceList <= to.DeviceList
	return to, ok, nil
}

// syncOnce computes one /sync answer from one database snapshot. It also
// returns what a long-poll should wait on: the notifier keys of the user
// and their joined rooms, and the positions this answer covered.
func (s *Syncer) syncOnce(ctx context.Context, req *syncRequest) (*syncResponse, []string, Token, error) {
	user := req.dev.UserID
	rd, err := s.openReader(ctx, user, req.dev.DeviceID)
	if err != nil {
		return nil, nil, Token{}, err
	}
	defer rd.close()
	rd.walks = map[int64]*walk{}

	var since Token
	if req.since != nil {
		since = *req.since
	}
	to, ok, err := s.streamsNow(rd, user, since)
	if err != nil {
		return nil, nil, Token{}, err
	}
	if !ok {
		return nil, nil, Token{}, httputil.InvalidParam("since token is not one this server gave out")
	}
	// Typing and presence live in memory and restart from the clock: a
	// token ahead of them (another run's) gets their current state.
	if since.Typing > to.Typing {
		since.Typing = 0
	}
	if since.Presence > to.Presence {
		since.Presence = 0
	}

	// An incremental sync reads only the rooms with news (none if the
	// room stream has not moved: every membership change is a row of
	// it); the list of joined rooms (for account data and long-polls)
	// comes from a cache.
	var rooms []storage.UserRoom
	joined, cached := s.joined.get(user)
	whole := req.since == nil || req.fullState
	if whole || !cached {
		all, err := rd.snap.UserRooms(user, whole)
		if err != nil {
			return nil, nil, Token{}, err
		}
		joined = joined[:0:0]
		for _, ur := range all {
			if ur.Membership == "join" {
				joined = append(joined, ur.RoomID)
			}
		}
		s.joined.put(user, joined, rd.readPos)
		if whole {
			rooms = all
		}
	}
	if !whole && since.Room < to.Room {
		if rooms, err = rd.snap.ChangedRooms(user, since.Room, to.Room); err != nil {
			return nil, nil, Token{}, err
		}
	}
	if req.lazyKey != "" && (req.since == nil || req.fullState) {
		s.lazy.reset(req.lazyKey) // the client starts with no members
	}
	res := newSyncResponse()
	f := req.filter
	var byID map[string]storage.UserRoom
	for _, ur := range rooms {
		if !f.Room.allowsRoom(ur.RoomID) {
			continue
		}
		if err := rd.syncRoom(res, req, ur, since.Room); err != nil {
			return nil, nil, Token{}, err
		}
		if res.Rooms.Join[ur.RoomID] != nil {
			if byID == nil {
				byID = map[string]storage.UserRoom{}
			}
			byID[ur.RoomID] = ur
		}
	}
	rd.joinedRooms = joined
	keys := make([]string, 0, len(joined)+2)
	keys = append(keys, userKey(user), deviceKey(user, req.dev.DeviceID))
	for _, id := range joined {
		keys = append(keys, roomKey(id))
	}
	if err := rd.streams(res, req, since, &to, joined, rooms, byID); err != nil {
		return nil, nil, Token{}, err
	}
	res.applyLimits(f)
	res.applyEventFields(f.EventFields)
	res.NextBatch = to.String()
	return res, keys, to, nil
}

// streams adds what is not a room's timeline and state: account data,
// typing and receipts, presence, to-device messages, device lists, key
// counts and unread counts. rooms are the memberships the sync read
// (byID those of its joined rooms); a stream's position in to may move
// back if it sent only part of what is new.
func (rd *reader) streams(res *syncResponse, req *syncRequest, since Token, to *Token, joined []string,
	rooms []storage.UserRoom, byID map[string]storage.UserRoom) error {
	if err := rd.accountData(res, req, since.AccountData, to.AccountData, joined); err != nil {
		return err
	}
	if err := rd.ephemeral(res, req, since, *to, joined); err != nil {
		return err
	}
	if err := rd.presenceSection(res, req, since.Presence); err != nil {
		return err
	}
	if since.ToDevice < to.ToDevice {
		if err := rd.toDevice(res, since.ToDevice, to); err != nil {
			return err
		}
	}
	if req.since != nil {
		var err error
		if res.DeviceLists.Changed, res.DeviceLists.Left, err = rd.deviceListDelta(since, *to, rooms); err != nil {
			return err
		}
	}
	if err := rd.keyCounts(res); err != nil {
		return err
	}
	return rd.unreadNotifications(res, byID)
}
