package syncapi

import (
	"net/http"
	"sync"

	"hearth/node/storage"
)

// pageScan is what one walk of a room's stream for /messages found.
type pageScan struct {
	evs  []*event // the events the filter allows, in walk order
	rows int      // stream rows passed (the filter may have dropped some)
	last int64    // the position of the last row passed
	more bool     // rows beyond the page remain in range
}

// scanPage is scan for /messages: it walks a room's stream between two
// positions (after < pos <= upto), newest first when desc, collecting up
// to limit events the filter allows (f may be nil), reading at most
// maxScan rows. It is one query, which reads each event with its row and
// leaves out the rows' state changes; events not in the cache are
// formatted into arena and never cached (history paging would only evict
// the recent events every sync needs), so they live as long as it does.
func (rd *reader) scanPage(rm roomInfo, after, upto int64, desc bool, limit int, f *RoomEventFilter, arena *pageArena) (pageScan, error) {
	var ps pageScan
	if after >= upto {
		return ps, nil
	}
	filtered := f != nil && f.selective()
	ps.evs = make([]*event, 0, min(limit, 256))
	err := rd.snap.StreamEvents(rm.nid, after, upto, desc, func(pos int64, se *storage.SyncEvent) bool {
		if len(ps.evs) == limit || ps.rows >= maxScan {
			ps.more = true
			return false
		}
		ps.rows++
		ps.last = pos
		ev := rd.s.cache.get(se.NID)
		if ev == nil || ev.Redacted != se.Redacted {
			var err error
			if ev, err = arena.parse(rm.id, se); err != nil {
				rd.s.log.Warn("syncapi: unreadable event", "room", rm.id, "event", se.ID, "err", err)
				return true
			}
		}
		if !filtered || f.allowsEvent(ev) {
			ps.evs = append(ps.evs, ev)
		}
		return true
	})
	if err != nil {
		return pageScan{}, err
	}
	return ps, nil
}

// pageBufs recycles /messages response bodies: a page of a hundred
// events is some 40 KB, written once and dropped. http.ResponseWriter
// does not keep what it is given, so a body is free again once written.
var pageBufs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledPage keeps unusually large bodies (limit=1000 with big events)
// from being held on to.
const maxPooledPage = 1 << 20

// size is the response's encoded length, near enough to size its buffer
// once: the events, the tokens and the keys around them (a token that
// needed escaping would only make appendJSON grow the buffer).
func (r *messagesResponse) size() int {
	n := 64 + len(r.Start) + len(r.End) + len(r.Chunk) + len(r.State)
	for _, e := range r.Chunk {
		n += len(e)
	}
	for _, e := range r.State {
		n += len(e)
	}
	return n
}

// writePage encodes the response into a recycled buffer and writes it.
func writePage(w http.ResponseWriter, res *messagesResponse) {
	p := pageBufs.Get().(*[]byte)
	buf := (*p)[:0]
	if n := res.size(); cap(buf) < n {
		buf = make([]byte, 0, n)
	}
	buf = res.appendJSON(buf)
	writeRaw(w, buf)
	if cap(buf) <= maxPooledPage {
		*p = buf[:0]
		pageBufs.Put(p)
	}
}
