package syncapi

import "sync"

// lazySent remembers, for lazy-loading syncs without
// include_redundant_members, which member event of each (room, member)
// was last sent to a device under a filter, so the same event is not sent
// again. It lives in memory: after a restart a client gets members it
// already has once more, which is redundant but never wrong.
type lazySent struct {
	mu sync.Mutex
	// by maps a device+filter key to (room, member) → member event ID.
	by map[string]map[roomMember]string
}

type roomMember struct{ room, member string }

// Bounds that keep a misbehaving client from growing the maps without
// end; forgetting only makes later syncs resend members.
const (
	maxLazyKeys   = 10000
	maxLazyPerKey = 100000
)

func newLazySent() *lazySent { return &lazySent{by: map[string]map[roomMember]string{}} }

// lazyKey names what a client's cache of members follows: its device and
// the filter it syncs with.
func lazyKey(user, device, filter string) string {
	return user + "\x00" + device + "\x00" + filter
}

// reset forgets what was sent under key: the client starts over (an
// initial or full-state sync).
func (l *lazySent) reset(key string) {
	l.mu.Lock()
	delete(l.by, key)
	l.mu.Unlock()
}

// drop removes from state the member events already sent under key.
func (l *lazySent) drop(key, room string, state []*event) []*event {
	l.mu.Lock()
	defer l.mu.Unlock()
	sent := l.by[key]
	if len(sent) == 0 {
		return state
	}
	out := state[:0:0]
	for _, ev := range state {
		if ev.Type == "m.room.member" && ev.StateKey != nil && sent[roomMember{room, *ev.StateKey}] == ev.ID {
			continue
		}
		out = append(out, ev)
	}
	return out
}

// record notes the member events among evs as sent under key.
func (l *lazySent) record(key, room string, evs ...[]*event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sent := l.by[key]
	for _, list := range evs {
		for _, ev := range list {
			if ev.Type != "m.room.member" || ev.StateKey == nil {
				continue
			}
			if sent == nil {
				if len(l.by) >= maxLazyKeys {
					clear(l.by)
				}
				sent = map[roomMember]string{}
				l.by[key] = sent
			}
			if len(sent) >= maxLazyPerKey {
				clear(sent)
			}
			sent[roomMember{room, *ev.StateKey}] = ev.ID
		}
	}
}
