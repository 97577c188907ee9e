package syncapi

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// Presence lives in memory, like typing: each user's state, and a log of
// (position, user) changes so an incremental sync finds who changed since
// its token without looking at everyone. Only changes of state, status
// message or activity take a position; last_active_ago is computed when
// a sync reads it.
//
// Local users go online when they sync (set_presence, default online),
// unavailable after PresenceIdleAfter without activity and offline after
// PresenceOfflineAfter with no sync in flight. Remote users' states come
// from their servers and go offline if not refreshed for an hour; so the
// sweeper sends other servers a local user's unchanged state again every
// presenceRefresh.

// PresenceStatus is a user's presence as clients see it.
type PresenceStatus struct {
	Presence        string // online, unavailable or offline
	StatusMsg       string
	LastActiveAgo   int64 // milliseconds
	CurrentlyActive bool
}

type presenceEntry struct {
	state      string
	statusMsg  string
	active     bool
	lastActive time.Time
	lastSeen   time.Time // local: last sync or explicit set; remote: last update
	inflight   int       // local syncs running now
	pos        int64
	sent       time.Time // last change or refresh told to other servers
	idled      bool      // unavailable because idle, not by choice
}

type presenceTable struct {
	mu    sync.Mutex
	pos   int64
	users map[string]*presenceEntry
	log   []presenceChange // ascending positions
}

type presenceChange struct {
	pos  int64
	user string
}

func newPresenceTable() *presenceTable {
	return &presenceTable{pos: clockSeed(), users: map[string]*presenceEntry{}}
}

func (t *presenceTable) current() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos
}

// entry returns a user's entry, creating an offline one.
func (t *presenceTable) entry(userID string) *presenceEntry {
	e := t.users[userID]
	if e == nil {
		e = &presenceEntry{state: "offline"}
		t.users[userID] = e
	}
	return e
}

// bump gives a changed entry the next position. Called with mu held.
func (t *presenceTable) bump(userID string, e *presenceEntry) int64 {
	t.pos++
	e.pos = t.pos
	t.log = append(t.log, presenceChange{t.pos, userID})
	if len(t.log) > 2*len(t.users)+256 { // keep only each user's newest change
		t.log = t.log[:0]
		for u, e := range t.users {
			if e.pos > 0 {
				t.log = append(t.log, presenceChange{e.pos, u})
			}
		}
		slices.SortFunc(t.log, func(a, b presenceChange) int { return cmp.Compare(a.pos, b.pos) })
	}
	return t.pos
}

func (e *presenceEntry) status(now time.Time) PresenceStatus {
	p := PresenceStatus{Presence: e.state, StatusMsg: e.statusMsg, CurrentlyActive: e.active && e.state == "online"}
	if !e.lastActive.IsZero() {
		p.LastActiveAgo = max(0, now.Sub(e.lastActive).Milliseconds())
	}
	return p
}

// changedSince lists the users whose presence changed after since (every
// user with a state other than offline when since is 0), with their
// status now.
func (t *presenceTable) changedSince(since int64) map[string]PresenceStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	if since >= t.pos {
		return nil
	}
	now := time.Now()
	out := map[string]PresenceStatus{}
	if since == 0 {
		for u, e := range t.users {
			if e.state != "offline" {
				out[u] = e.status(now)
			}
		}
		return out
	}
	for i := len(t.log) - 1; i >= 0 && t.log[i].pos > since; i-- {
		u := t.log[i].user
		if _, ok := out[u]; !ok {
			out[u] = t.users[u].status(now)
		}
	}
	return out
}

// update applies fn to a user's entry under the lock; fn reports whether
// the visible presence changed. It returns the new position (0: none) and
// the status.
func (t *presenceTable) update(userID string, fn func(e *presenceEntry, now time.Time) bool) (int64, PresenceStatus) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	e := t.entry(userID)
	if !fn(e, now) {
		return 0, e.status(now)
	}
	e.sent = now
	return t.bump(userID, e), e.status(now)
}

// PresenceOf returns a user's presence, if this node knows it.
func (s *Syncer) PresenceOf(userID string) (PresenceStatus, bool) {
	t := s.presence
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.users[userID]
	if !ok {
		return PresenceStatus{}, false
	}
	return e.status(time.Now()), true
}

// OnPresence records a presence a local user set (PUT /presence).
func (s *Syncer) OnPresence(userID, presence, statusMsg string) {
	pos, st := s.presence.update(userID, func(e *presenceEntry, now time.Time) bool {
		e.lastSeen, e.idled = now, false
		wasActive := e.active
		if presence == "online" {
			e.lastActive, e.active = now, true
		} else {
			e.active = false
		}
		changed := e.state != presence || e.statusMsg != statusMsg || wasActive != e.active
		e.state, e.statusMsg = presence, statusMsg
		return changed
	})
	s.presenceChanged(userID, pos, st, true)
}

// syncStarted applies a sync's set_presence ("" means online) and counts
// the sync as in flight; call the returned function when it ends.
func (s *Syncer) syncStarted(userID, setPresence string) func() {
	if setPresence == "" {
		setPresence = "online"
	}
	pos, st := s.presence.update(userID, func(e *presenceEntry, now time.Time) bool {
		e.lastSeen = now
		e.inflight++
		switch {
		case setPresence == "online" && e.state == "offline":
			e.state, e.lastActive, e.active = "online", now, true
			return true
		case setPresence == "unavailable" && e.state != "unavailable":
			e.state, e.active, e.idled = "unavailable", false, false
			return true
		}
		return false
	})
	s.presenceChanged(userID, pos, st, true)
	return func() {
		s.presence.update(userID, func(e *presenceEntry, now time.Time) bool {
			e.lastSeen = now
			e.inflight--
			return false
		})
	}
}

// active records a local user's activity (typing, reading): it keeps
// them from idling, and brings them back online if they had.
func (s *Syncer) active(userID string) {
	pos, st := s.presence.update(userID, func(e *presenceEntry, now time.Time) bool {
		e.lastActive = now
		if e.idled {
			e.state, e.active, e.idled = "online", true, false
			return true
		}
		return false
	})
	s.presenceChanged(userID, pos, st, true)
}

// ReceivePresence records a remote user's presence from their server.
func (s *Syncer) ReceivePresence(userID string, p PresenceStatus) {
	switch p.Presence {
	case "online", "unavailable", "offline":
	default:
		return
	}
	pos, st := s.presence.update(userID, func(e *presenceEntry, now time.Time) bool {
		e.lastSeen = now
		e.lastActive = now.Add(-time.Duration(max(0, p.LastActiveAgo)) * time.Millisecond)
		changed := e.state != p.Presence || e.statusMsg != p.StatusMsg || e.active != p.CurrentlyActive
		e.state, e.statusMsg, e.active = p.Presence, p.StatusMsg, p.CurrentlyActive
		return changed
	})
	s.presenceChanged(userID, pos, st, false)
}

// presenceChanged wakes the long-polls of the user and of their rooms,
// and tells the other servers in those rooms about a local user.
func (s *Syncer) presenceChanged(userID string, pos int64, st PresenceStatus, local bool) {
	if pos == 0 {
		return
	}
	advance := func(t *Token) { t.Presence = max(t.Presence, pos) }
	s.notify.notify(userKey(userID), advance)
	rooms, err := s.roomsOf(context.Background(), userID)
	if err != nil {
		s.log.Warn("syncapi: rooms of a user whose presence changed", "user", userID, "err", err)
		return
	}
	for _, r := range rooms {
		s.notify.notify(roomKey(r), advance)
	}
	if o := s.outbound(); o != nil && local && s.local(userID) {
		o.Presence(userID, st, rooms)
	}
}

// sweepPresence times out presence: local users idle or gone, remote
// users not refreshed.
func (s *Syncer) sweepPresence() {
	type change struct {
		user  string
		pos   int64
		st    PresenceStatus
		local bool
	}
	var changes, refreshes []change
	t := s.presence
	t.mu.Lock()
	now := time.Now()
	for u, e := range t.users {
		if e.state == "offline" {
			continue
		}
		local := s.local(u)
		switch {
		case local && e.inflight == 0 && now.Sub(e.lastSeen) > s.cfg.PresenceOfflineAfter,
			!local && now.Sub(e.lastSeen) > remotePresenceTimeout:
			e.state, e.active = "offline", false
		case local && e.state == "online" && now.Sub(e.lastActive) > s.cfg.PresenceIdleAfter:
			e.state, e.active, e.idled = "unavailable", false, true
		default:
			if local && now.Sub(e.sent) > presenceRefresh {
				e.sent = now
				refreshes = append(refreshes, change{user: u, st: e.status(now)})
			}
			continue
		}
		e.sent = now
		changes = append(changes, change{u, t.bump(u, e), e.status(now), local})
	}
	t.mu.Unlock()
	for _, c := range changes {
		s.presenceChanged(c.user, c.pos, c.st, c.local)
	}
	if o := s.outbound(); o != nil {
		for _, c := range refreshes {
			if rooms, err := s.roomsOf(context.Background(), c.user); err == nil {
				o.Presence(c.user, c.st, rooms)
			}
		}
	}
}

// presenceRefresh is how often other servers hear again of a local user
// whose presence did not change (well within remotePresenceTimeout).
const presenceRefresh = 20 * time.Minute

// remotePresenceTimeout is how long a remote user's presence holds
// without news from their server.
const remotePresenceTimeout = time.Hour

// presenceLoop runs the sweeper until the syncer closes.
func (s *Syncer) presenceLoop() {
	defer s.wg.Done()
	every := min(s.cfg.PresenceOfflineAfter, s.cfg.PresenceIdleAfter) / 2
	tk := time.NewTicker(max(every, 10*time.Millisecond))
	defer tk.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tk.C:
			s.sweepPresence()
		}
	}
}
