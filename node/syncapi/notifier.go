package syncapi

import "sync"

// notifier wakes long-polling /sync requests. A waiting request listens on
// a set of keys — its user ("u:" + user ID: membership, account data,
// private receipts, their own presence and devices), its device ("d:" +
// user ID + "|" + device ID: to-device messages) and each room it is
// joined to ("r:" + room ID: events, typing, receipts, and the presence
// and device changes of the room's members) — and is woken only when one
// of them changes. Each key remembers the newest positions
// it changed at, so a request that registers after the change it missed
// (its database read was older) is woken at once: no lost wake-ups, and
// no wake-ups for rooms a request does not care about.
type notifier struct {
	mu   sync.Mutex
	keys map[string]*notifyKey
}

type notifyKey struct {
	pos     Token // newest position per stream this key changed at
	waiters map[*waiter]struct{}
}

// waiter is one waiting request.
type waiter struct {
	ch    chan struct{} // closed once when woken
	keys  []string
	user  string // whose request it is
	woken bool
	// echo: what woke it was an event its own user sent (see notifyFrom);
	// set before ch is closed.
	echo bool
}

func newNotifier() *notifier {
	return &notifier{keys: map[string]*notifyKey{}}
}

func userKey(userID string) string { return "u:" + userID }
func roomKey(roomID string) string { return "r:" + roomID }
func deviceKey(userID, deviceID string) string {
	return "d:" + userID + "|" + deviceID
}

// newer reports whether any stream of a is ahead of b.
func (a *Token) newer(b *Token) bool {
	fa, fb := a.fields(), b.fields()
	for i := range fa {
		if *fa[i] > *fb[i] {
			return true
		}
	}
	return false
}

// wait registers a waiter on keys for changes after seen (the positions
// the caller's read covered). The waiter's channel is already closed if a
// key changed after seen. Call done when finished with it.
func (n *notifier) wait(keys []string, seen Token, user string) *waiter {
	w := &waiter{ch: make(chan struct{}), keys: keys, user: user}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, k := range keys {
		nk := n.keys[k]
		if nk == nil {
			nk = &notifyKey{}
			n.keys[k] = nk
		}
		if nk.pos.newer(&seen) && !w.woken {
			w.woken = true
			close(w.ch)
		}
		if nk.waiters == nil {
			nk.waiters = map[*waiter]struct{}{}
		}
		nk.waiters[w] = struct{}{}
	}
	return w
}

// done unregisters a waiter.
func (n *notifier) done(w *waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, k := range w.keys {
		if nk := n.keys[k]; nk != nil {
			delete(nk.waiters, w)
			if len(nk.waiters) == 0 {
				nk.waiters = nil
			}
		}
	}
}

// notify records that key changed at pos (set advances the streams it
// names) and wakes its waiters.
func (n *notifier) notify(key string, set func(*Token)) { n.notifyFrom(key, "", set) }

// notifyFrom is notify for an event sender sent: a request of sender's it
// wakes is told so (waiter.echo).
func (n *notifier) notifyFrom(key, sender string, set func(*Token)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nk := n.keys[key]
	if nk == nil {
		nk = &notifyKey{}
		n.keys[key] = nk
	}
	set(&nk.pos)
	for w := range nk.waiters {
		if !w.woken {
			w.woken, w.echo = true, sender != "" && w.user == sender
			close(w.ch)
		}
	}
	nk.waiters = nil
}
