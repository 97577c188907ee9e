package syncapi

import (
	"slices"
	"sync"
	"time"
)

// Typing notifications live in memory: who types in which room, each with
// a timer that ends it. Every change takes a new position of the typing
// stream; a room remembers the position of its last change, so a sync
// sends a room's typing users when they changed since its token.
type typingTable struct {
	mu    sync.Mutex
	pos   int64
	rooms map[string]*roomTyping
}

type roomTyping struct {
	pos   int64              // last change
	users map[string]*typist // who types
}

// typist is one user typing, with the timer that ends it.
type typist struct{ timer *time.Timer }

// maxTypingRooms bounds the rooms remembered with nobody typing.
const maxTypingRooms = 10000

func newTypingTable() *typingTable {
	return &typingTable{pos: clockSeed(), rooms: map[string]*roomTyping{}}
}

func (t *typingTable) current() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos
}

// set starts (with a timeout) or stops a user's typing. It returns the
// new position, or 0 if nothing changed (a refresh of someone already
// typing only moves their timer).
func (t *typingTable) set(roomID, userID string, typing bool, timeout time.Duration, expire func(*typist)) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.rooms[roomID]
	if rt == nil {
		if !typing {
			return 0
		}
		if len(t.rooms) >= maxTypingRooms {
			t.prune()
		}
		rt = &roomTyping{users: map[string]*typist{}}
		t.rooms[roomID] = rt
	}
	old := rt.users[userID]
	if old != nil {
		old.timer.Stop()
	}
	if !typing {
		if old == nil {
			return 0
		}
		delete(rt.users, userID)
	} else {
		ty := &typist{}
		ty.timer = time.AfterFunc(timeout, func() { expire(ty) })
		rt.users[userID] = ty
		if old != nil {
			return 0
		}
	}
	t.pos++
	rt.pos = t.pos
	return t.pos
}

// expire ends a user's typing if ty is still their current typing.
func (t *typingTable) expire(roomID, userID string, ty *typist) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.rooms[roomID]
	if rt == nil || rt.users[userID] != ty {
		return 0
	}
	delete(rt.users, userID)
	t.pos++
	rt.pos = t.pos
	return t.pos
}

// prune forgets rooms where nobody types. Clients holding a token from
// before such a room's last change may keep showing a typist until the
// next change there; bounded memory is worth it.
func (t *typingTable) prune() {
	for id, rt := range t.rooms {
		if len(rt.users) == 0 {
			delete(t.rooms, id)
		}
	}
}

// changed returns, for each of rooms whose typing changed after since
// (and, when since is 0, where someone types), who types now.
func (t *typingTable) changed(rooms []string, since int64) map[string][]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if since >= t.pos {
		return nil
	}
	var out map[string][]string
	for _, id := range rooms {
		rt := t.rooms[id]
		if rt == nil || rt.pos <= since || (since == 0 && len(rt.users) == 0) {
			continue
		}
		users := make([]string, 0, len(rt.users))
		for u := range rt.users {
			users = append(users, u)
		}
		slices.Sort(users)
		if out == nil {
			out = map[string][]string{}
		}
		out[id] = users
	}
	return out
}

// typingNotified wakes the room's long-polls for a typing change at pos.
func (s *Syncer) typingNotified(roomID string, pos int64) {
	if pos == 0 {
		return
	}
	s.notify.notify(roomKey(roomID), func(t *Token) { t.Typing = max(t.Typing, pos) })
}

func (s *Syncer) setTyping(roomID, userID string, typing bool, timeout time.Duration) int64 {
	expire := func(ty *typist) {
		pos := s.typing.expire(roomID, userID, ty)
		s.typingNotified(roomID, pos)
		if pos != 0 && s.local(userID) {
			if o := s.outbound(); o != nil {
				o.Typing(roomID, userID, false)
			}
		}
	}
	pos := s.typing.set(roomID, userID, typing, timeout, expire)
	s.typingNotified(roomID, pos)
	return pos
}

// OnTyping records a local user's typing (the client API has checked they
// are joined) and tells the room's other servers.
func (s *Syncer) OnTyping(roomID, userID string, typing bool, timeout time.Duration) {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	if typing {
		s.active(userID)
	}
	pos := s.setTyping(roomID, userID, typing, timeout)
	// A refresh changes nothing here but keeps the typing alive on
	// servers that time it out on their own.
	if o := s.outbound(); o != nil && (typing || pos != 0) {
		o.Typing(roomID, userID, typing)
	}
}

// ReceiveTyping records a remote user's typing from their server's EDU.
// The caller has checked the user belongs to the sending server; it must
// also be joined to the room.
func (s *Syncer) ReceiveTyping(roomID, userID string, typing bool) {
	s.setTyping(roomID, userID, typing, s.cfg.RemoteTypingTimeout)
}
