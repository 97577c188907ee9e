package syncapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"hearth/node/storage"
)

// Ignored users (m.ignored_user_list account data): their timeline
// events, invites, to-device messages, typing and receipts are not
// delivered. Their state events stay: a client needs the room's state
// whoever set it.

// ignoredCache keeps each user's ignore list with the position of their
// account data it was read at: a sync whose snapshot shows the same
// position reuses it without a query.
type ignoredCache struct {
	mu sync.Mutex
	m  map[string]ignoredEntry
}

type ignoredEntry struct {
	pos   int64
	users map[string]bool
}

func newIgnoredCache() *ignoredCache { return &ignoredCache{m: map[string]ignoredEntry{}} }

// ignoredUsers returns the reader's user's ignored users (never nil).
func (rd *reader) ignoredUsers() (map[string]bool, error) {
	if rd.ignored != nil {
		return rd.ignored, nil
	}
	c := rd.s.ignored
	switch {
	case rd.accountDataPos == 0: // the user has no account data at all
		rd.ignored = map[string]bool{}
		return rd.ignored, nil
	case rd.accountDataPos > 0:
		c.mu.Lock()
		e, ok := c.m[rd.user]
		c.mu.Unlock()
		if ok && e.pos == rd.accountDataPos {
			rd.ignored = e.users
			return e.users, nil
		}
	}
	users := map[string]bool{}
	b, err := rd.snap.GlobalAccountData(rd.user, "m.ignored_user_list")
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("syncapi: ignored users: %w", err)
	default:
		var content struct {
			Ignored map[string]json.RawMessage `json:"ignored_users"`
		}
		if json.Unmarshal(b, &content) == nil {
			for u := range content.Ignored {
				if u != rd.user {
					users[u] = true
				}
			}
		}
	}
	if rd.accountDataPos > 0 {
		c.mu.Lock()
		if len(c.m) >= 100000 {
			clear(c.m)
		}
		c.m[rd.user] = ignoredEntry{rd.accountDataPos, users}
		c.mu.Unlock()
	}
	rd.ignored = users
	return users, nil
}

// dropIgnored removes ignored senders' non-state events.
func (rd *reader) dropIgnored(evs []*event) ([]*event, error) {
	if len(evs) == 0 {
		return evs, nil
	}
	ignored, err := rd.ignoredUsers()
	if err != nil || len(ignored) == 0 {
		return evs, err
	}
	out := evs[:0:0]
	for _, ev := range evs {
		if ev.StateKey == nil && ignored[ev.Sender] {
			continue
		}
		out = append(out, ev)
	}
	return out, nil
}
