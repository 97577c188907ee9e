package syncapi

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"

	"hearth/node/httputil"
	"hearth/node/storage"
)

const (
	defaultPageLimit = 10
	maxPageLimit     = 1000
)

type messagesResponse struct {
	Chunk []json.RawMessage `json:"chunk"`
	Start string            `json:"start"`
	End   string            `json:"end,omitempty"`
	State []json.RawMessage `json:"state,omitempty"`
}

// HandleMessages serves GET /_matrix/client/v3/rooms/{roomId}/messages:
// a page of a room's timeline in either direction from a pagination or
// sync token. One indexed query reads a page's events with their stream
// positions (more only when a filter drops events); events come from the
// cache or are formatted from their stored JSON (see scanPage).
func (s *Syncer) HandleMessages(w http.ResponseWriter, r *http.Request) {
	dev := httputil.DeviceFrom(r.Context())
	if dev == nil {
		httputil.WriteError(w, r, httputil.MissingToken("missing access token"))
		return
	}
	q := r.URL.Query()
	var desc bool
	switch q.Get("dir") {
	case "b":
		desc = true
	case "f":
	case "":
		httputil.WriteError(w, r, httputil.MissingParam("dir is required"))
		return
	default:
		httputil.WriteError(w, r, httputil.InvalidParam("dir must be b or f"))
		return
	}
	limit, err := parseLimit(q.Get("limit"), defaultPageLimit)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	f, err := parseEventFilterParam(q.Get("filter"))
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	from, hasFrom, err := parseTokenParam(q.Get("from"), "from")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	to, hasTo, err := parseTokenParam(q.Get("to"), "to")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}

	var rd *reader
	var rm roomInfo
	var acc *access
	var lo, hi int64
	var page pageScan
	var backfilled bool
	// The page's events live in the arena until the answer is written.
	arena := newPageArena()
	defer arena.release()
	for attempt := 0; ; attempt++ {
		if rd, err = s.historyReader(r.Context(), dev); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		if rm, acc, err = rd.roomAccess(r.PathValue("roomId")); err != nil {
			rd.close()
			httputil.WriteError(w, r, err)
			return
		}
		lo, hi = pageBounds(desc, acc.limit, from, hasFrom, to, hasTo)
		if page, err = rd.scanPage(rm, lo, hi, desc, limit, f, arena); err != nil {
			rd.close()
			httputil.WriteError(w, r, err)
			return
		}
		// Reaching the start of what this node holds, going back: ask
		// other servers for older history once, then read again.
		if !desc || page.more || hasTo || attempt > 0 || s.cfg.Backfill == nil {
			break
		}
		rd.close()
		if backfilled, err = s.cfg.Backfill(r.Context(), rm.id, limit); err != nil {
			s.cfg.Logger.Warn("backfill failed", "room", rm.id, "err", err)
		}
		if !backfilled {
			if rd, err = s.newReader(r.Context(), dev.UserID, dev.DeviceID); err != nil {
				httputil.WriteError(w, r, err)
				return
			}
			break
		}
	}
	defer rd.close()
	res := messagesResponse{Start: q.Get("from")}
	if !hasFrom {
		res.Start = pageToken(hi)
		if !desc {
			res.Start = pageToken(lo)
		}
	}
	// More may wait on other servers even when this page ran out here.
	if (page.more || backfilled) && page.rows > 0 {
		if desc {
			res.End = pageToken(page.last - 1)
		} else {
			res.End = pageToken(page.last)
		}
	}
	// History visibility and ignored users, event by event.
	evs, err := rd.readable(rm, acc, page.evs)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	chunk, err := rd.withTxnIDs(rm, evs)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	res.Chunk = rawList(chunk)
	if f != nil && f.LazyLoadMembers && len(evs) > 0 {
		if res.State, err = rd.chunkMembers(rm, evs); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	writePage(w, &res)
}

// pageBounds turns /messages' from and to into the stream positions the
// page lies strictly after and at most at. Going back without a to, the
// page may run into backfilled history below position 0.
func pageBounds(desc bool, limitPos, from int64, hasFrom bool, to int64, hasTo bool) (lo, hi int64) {
	if desc {
		lo, hi = math.MinInt64, limitPos
		if hasFrom {
			hi = min(from, limitPos)
		}
		if hasTo {
			lo = to
		}
		return lo, hi
	}
	lo, hi = math.MinInt64, limitPos
	if hasFrom {
		lo = from
	}
	if hasTo {
		hi = min(to, limitPos)
	}
	return lo, hi
}

// previousMembership is the user's membership just before their current
// one, from the removes of the stream row that set it ("" if none).
func (rd *reader) previousMembership(rm roomInfo, ur storage.UserRoom) (string, error) {
	_, _, _, removes, err := rd.snap.StreamRowAt(ur.Pos)
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	nids, err := storage.UnpackNIDs(removes)
	if err != nil {
		return "", err
	}
	evs, err := rd.events(rm, nids)
	if err != nil {
		return "", err
	}
	for _, ev := range evs {
		if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == rd.user {
			return ev.Membership, nil
		}
	}
	return "", nil
}

// chunkMembers returns the member events of the chunk's senders as the
// room's state had them at the chunk: just before its first event (the
// one nearest to `from`), as Synapse answers. An event with no known
// state (an outlier) falls back to the current members.
func (rd *reader) chunkMembers(rm roomInfo, evs []*event) ([]json.RawMessage, error) {
	mt, err := rd.memberType()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var senders []string
	for _, ev := range evs {
		if !seen[ev.Sender] {
			seen[ev.Sender] = true
			senders = append(senders, ev.Sender)
		}
	}
	keys, err := rd.snap.KeyNIDs(senders)
	if err != nil {
		return nil, err
	}
	keyNIDs := make([]int64, 0, len(keys))
	for n := range keys {
		keyNIDs = append(keyNIDs, n)
	}
	var nids []int64
	if snap := evs[0].SnapshotNID; snap != 0 {
		all, err := rd.snap.SnapshotState(snap)
		if err != nil {
			return nil, err
		}
		for _, e := range all {
			if _, sender := keys[e.KeyNID]; sender && e.TypeNID == mt {
				nids = append(nids, e.EventNID)
			}
		}
	} else {
		entries, err := rd.snap.CurrentStateOf(rm.nid, mt, keyNIDs)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			nids = append(nids, e.EventNID)
		}
	}
	members, err := rd.events(rm, nids)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(members))
	for i, ev := range members {
		out[i] = ev.JSON
	}
	return out, nil
}

// parseLimit reads a limit parameter: def when absent or 0, capped.
func parseLimit(v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, httputil.InvalidParam("limit must be a non-negative integer")
	}
	if n == 0 {
		return def, nil
	}
	return min(n, maxPageLimit), nil
}

func parseEventFilterParam(v string) (*RoomEventFilter, error) {
	if v == "" {
		return nil, nil
	}
	f, err := ParseRoomEventFilter([]byte(v))
	if err != nil {
		return nil, httputil.InvalidParam(err.Error())
	}
	return f, nil
}

func parseTokenParam(v, name string) (int64, bool, error) {
	if v == "" {
		return 0, false, nil
	}
	p, err := parsePageToken(v)
	if err != nil {
		return 0, false, httputil.InvalidParam("malformed " + name + " token")
	}
	return p, true, nil
}
