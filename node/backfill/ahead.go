package backfill

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// A read-ahead is a coming page of a room's history, fetched and verified
// (the costly part: hashes and signatures) while the pages after it are
// stored, so that a client paging back waits for storing alone. It is
// only a guess: the next backfill uses it if it starts exactly where that
// backfill must, else drops it. It is never stored unasked.
//
// A room reads up to aheadDepth pages ahead, each starting where the one
// before it leaves off, and each starts as soon as the page before it
// has arrived, before that page is verified: where verifying waits on
// other threads (the browser's check workers), the node's one thread
// fetches meanwhile, and the next page's checks are queued on those
// threads before the node starts storing.
type readAhead struct {
	server  spec.ServerName
	roomID  string
	version gomatrixserverlib.RoomVersion
	from    []string
	limit   int
	done    chan struct{}
	page    *page // set before done is closed
	cancel  context.CancelFunc
	expire  *time.Timer
	// Guarded by Backfiller.mu:
	// next is where the page before this one starts, guessed once this
	// one arrived (nil until then);
	next []string
	// dropped: let go before it was taken; it starts no page after it.
	dropped bool
}

// Bounds on read-aheads: how many pages one room reads ahead, how many
// all rooms together, and how long one waits for the client's next page
// before it is let go.
const (
	aheadDepth = 2
	maxAheads  = 8
	aheadTTL   = time.Minute
)

// ahead makes sure the page before from is read ahead as the page after
// the read-ahead after (nil: as the room's next page): kept if it already
// is, else started in place of what the room held from there on.
func (b *Backfiller) ahead(st *roomBackfill, after *readAhead, s spec.ServerName, roomID string, version gomatrixserverlib.RoomVersion, from []string, limit int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.aheadLocked(st, after, &readAhead{server: s, roomID: roomID, version: version, from: from, limit: limit})
}

// arrived notes where the page before ra starts (next, a guess) once ra's
// page has arrived, and starts reading it ahead.
func (b *Backfiller) arrived(st *roomBackfill, ra *readAhead, next []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ra.next = next
	b.aheadLocked(st, ra, ra.before(next))
}

// before is the read-ahead, not yet started, of the page before ra's,
// starting at from: same server, room and size.
func (ra *readAhead) before(from []string) *readAhead {
	return &readAhead{server: ra.server, roomID: ra.roomID, version: ra.version, from: from, limit: ra.limit}
}

// aheadLocked is ahead for the read-ahead want, not yet started. b.mu
// must be held.
func (b *Backfiller) aheadLocked(st *roomBackfill, after, want *readAhead) {
	i := 0
	if after != nil {
		if after.dropped {
			return
		}
		// -1 when the backfill took it: what follows it is the room's next.
		i = slices.Index(st.ahead, after) + 1
	}
	if i < len(st.ahead) && st.ahead[i].version == want.version && sameSet(st.ahead[i].from, want.from) {
		return // on its way
	}
	b.dropFrom(st, i)
	if b.closed || len(want.from) == 0 || i >= aheadDepth || b.aheads >= maxAheads {
		return
	}
	ra := want
	var ctx context.Context
	ctx, ra.cancel = context.WithTimeout(context.Background(), timeout)
	ra.done = make(chan struct{})
	st.ahead = append(st.ahead, ra)
	b.aheads++
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(ra.done)
		ra.page = b.fetchPage(ctx, st, ra, ra.server, ra.roomID, ra.version, ra.from, ra.limit)
	}()
	ra.expire = time.AfterFunc(aheadTTL, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if i := slices.Index(st.ahead, ra); i >= 0 {
			b.dropFrom(st, i)
		}
	})
}

// dropFrom lets go of the room's read-aheads from the i-th on. b.mu must
// be held.
func (b *Backfiller) dropFrom(st *roomBackfill, i int) {
	if i >= len(st.ahead) {
		return
	}
	for _, ra := range st.ahead[i:] {
		ra.dropped = true
		b.release(ra)
	}
	st.ahead = slices.Delete(st.ahead, i, len(st.ahead))
}

// release stops a read-ahead if it still runs, and frees its place. b.mu
// must be held, and ra no longer be in its room's list.
func (b *Backfiller) release(ra *readAhead) {
	ra.cancel()
	ra.expire.Stop()
	b.aheads--
}

// takeAhead returns the room's next read-ahead page once it is ready, if
// it starts where the backfill must (from, in a room of version); if it
// does not, the room's read-aheads are all dropped. Nil: there is none to
// use. The pages read ahead after it stay.
func (b *Backfiller) takeAhead(ctx context.Context, st *roomBackfill, version gomatrixserverlib.RoomVersion, from []string) *page {
	b.mu.Lock()
	if len(st.ahead) == 0 {
		b.mu.Unlock()
		return nil
	}
	ra := st.ahead[0]
	if ra.version != version || !sameSet(ra.from, from) {
		b.dropFrom(st, 0)
		b.mu.Unlock()
		return nil
	}
	st.ahead = slices.Delete(st.ahead, 0, 1)
	// Room for one more: after the last, if it knows where it leads.
	if n := len(st.ahead); n > 0 && st.ahead[n-1].next != nil {
		last := st.ahead[n-1]
		b.aheadLocked(st, last, last.before(last.next))
	}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.release(ra)
		b.mu.Unlock()
	}()
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

// dropAhead lets the room's read-aheads go.
func (b *Backfiller) dropAhead(st *roomBackfill) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dropFrom(st, 0)
}

// guessNext is where history most likely goes on before a page not yet
// verified: the prev events of its oldest events. (Which of its events'
// prev events lie outside the page cannot be told without the events'
// IDs, which verifying works out.) A wrong guess costs a dropped
// read-ahead, not a wrong page: store works out from the verified page
// where the next one must start.
func guessNext(pdus []json.RawMessage) []string {
	oldest := int64(math.MaxInt64)
	var next []string
	for _, js := range pdus {
		depth := gjson.GetBytes(js, "depth").Int()
		if depth > oldest {
			continue
		}
		if depth < oldest {
			oldest, next = depth, next[:0]
		}
		for _, id := range gjson.GetBytes(js, "prev_events").Array() {
			next = append(next, id.String())
		}
	}
	slices.Sort(next)
	return slices.Compact(next)
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
