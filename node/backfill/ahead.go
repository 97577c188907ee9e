package backfill

import (
	"context"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// A read-ahead is the next page of a room's history, fetched and
// verified (the costly part: hashes and signatures) while the page before
// it is stored, so that a client paging back waits for storing alone.
// It is only a guess: the next backfill uses it if it starts exactly
// where that backfill must, else drops it. It is never stored unasked.
type readAhead struct {
	version gomatrixserverlib.RoomVersion
	from    []string
	done    chan struct{}
	page    *page // set before done is closed
	cancel  context.CancelFunc
	expire  *time.Timer
}

// Bounds on read-aheads: how many rooms hold one at a time, and how long
// one waits for the client's next page before it is let go.
const (
	maxAheads = 4
	aheadTTL  = time.Minute
)

// readAhead starts fetching the page before from (from server s) in the
// background, in place of any page the room held.
func (b *Backfiller) readAhead(st *roomBackfill, s spec.ServerName, roomID string, version gomatrixserverlib.RoomVersion, from []string, limit int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if old := st.ahead; old != nil {
		st.ahead = nil
		b.release(old)
	}
	if b.closed || b.aheads >= maxAheads {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	ra := &readAhead{version: version, from: from, done: make(chan struct{}), cancel: cancel}
	st.ahead = ra
	b.aheads++
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(ra.done)
		ra.page = b.fetchPage(ctx, s, roomID, version, from, limit)
	}()
	ra.expire = time.AfterFunc(aheadTTL, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if st.ahead == ra {
			st.ahead = nil
			b.release(ra)
		}
	})
}

// release lets a read-ahead go: stops it if it still runs, and frees its
// place. b.mu must be held, and ra no longer be the room's.
func (b *Backfiller) release(ra *readAhead) {
	ra.cancel()
	ra.expire.Stop()
	b.aheads--
}

// takeAhead returns the room's read-ahead page once it is ready, if it
// starts where the backfill must (from, in a room of version), and drops
// it either way. Nil: there is none to use.
func (b *Backfiller) takeAhead(ctx context.Context, st *roomBackfill, version gomatrixserverlib.RoomVersion, from []string) *page {
	b.mu.Lock()
	ra := st.ahead
	st.ahead = nil
	b.mu.Unlock()
	if ra == nil {
		return nil
	}
	defer func() {
		b.mu.Lock()
		b.release(ra)
		b.mu.Unlock()
	}()
	if ra.version != version || !sameSet(ra.from, from) {
		return nil
	}
	select {
	case <-ra.done:
	case <-ctx.Done():
		return nil
	}
	if ra.page.err != nil || len(ra.page.evs) == 0 {
		return nil
	}
	return ra.page
}

// dropAhead lets the room's read-ahead go, if it has one.
func (b *Backfiller) dropAhead(st *roomBackfill) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ra := st.ahead; ra != nil {
		st.ahead = nil
		b.release(ra)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
