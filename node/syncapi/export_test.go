package syncapi

// What the external tests need to look inside.

// Waiter registers a wait as a long-poll of user's device in rooms would,
// having read up to since (a next_batch), and reports whether it has been
// woken. The notifier wakes synchronously, so after an action returns a
// waiter that is not woken was not woken by it.
func (s *Syncer) Waiter(user, device string, rooms []string, since string) (woken func() bool, done func()) {
	seen, err := ParseToken(since)
	if err != nil {
		panic(err)
	}
	keys := []string{userKey(user), deviceKey(user, device)}
	for _, r := range rooms {
		keys = append(keys, roomKey(r))
	}
	w := s.notify.wait(keys, seen, "")
	return func() bool {
			select {
			case <-w.ch:
				return true
			default:
				return false
			}
		}, func() {
			s.notify.done(w)
		}
}

// SweepPresence runs the presence timeouts now.
func (s *Syncer) SweepPresence() { s.sweepPresence() }
