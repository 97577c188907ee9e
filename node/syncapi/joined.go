package syncapi

import "sync"

// joinedRooms caches each user's joined room IDs: a long-poll waits on
// them, and an incremental sync with no news should not read every
// membership to learn them. A membership change of the user, notified at
// stream position p, drops the entry, and a read older than p may not
// store one (it may predate the change).
type joinedRooms struct {
	mu      sync.Mutex
	rooms   map[string][]string
	changed map[string]int64
}

// maxJoinedUsers bounds the cache; past it, it starts again empty.
const maxJoinedUsers = 100000

func newJoinedRooms() *joinedRooms {
	return &joinedRooms{rooms: map[string][]string{}, changed: map[string]int64{}}
}

func (j *joinedRooms) get(user string) ([]string, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r, ok := j.rooms[user]
	return r, ok
}

// put stores the rooms a read at stream position readPos found.
func (j *joinedRooms) put(user string, rooms []string, readPos int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if readPos < j.changed[user] {
		return
	}
	if len(j.rooms) >= maxJoinedUsers {
		clear(j.rooms)
	}
	j.rooms[user] = rooms
}

// invalidate records a membership change of user at pos.
func (j *joinedRooms) invalidate(user string, pos int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.rooms, user)
	if pos > j.changed[user] {
		if len(j.changed) >= maxJoinedUsers {
			// Forgetting positions is safe only with the entries they guard.
			clear(j.changed)
			clear(j.rooms)
		}
		j.changed[user] = pos
	}
}
