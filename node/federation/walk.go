package federation

import (
	"container/heap"
	"context"
	"encoding/json"
	"fmt"

	"hearth/node/storage"
)

// readAheadSlack is how many events past what a walk still needs one read
// ahead loads: siblings at the depth where it stops.
const readAheadSlack = 16

// walk visits the events before start (prev_events, backwards), newest
// first, each once, skipping those in skip and, below minDepth, not going
// further; it stops after limit events. Events we do not hold (or hold
// as rejected, or of another room) end their branch.
//
// It reads the database a batch at a time, not an event at a time: the
// events it reaches that it has not read yet in one query, and with them
// the room's events just below them by depth, which a walk back through
// history visits next (in a linear history, all of them). It reads
// prev_events out of the stored JSON and never parses whole events.
func (f *Federation) walk(ctx context.Context, room *storage.Room, start []string, skip map[string]bool, includeStart bool, minDepth int64, limit int) ([]*storage.Event, error) {
	w := &walker{db: f.db, room: room, minDepth: minDepth, known: map[string]*walkEvent{}, budget: 2*limit + readAheadSlack}
	seen := make(map[string]bool, len(skip)+limit)
	for id := range skip {
		seen[id] = true
	}
	q := &depthHeap{}
	var pending []string
	reach := func(ids []string) {
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				pending = append(pending, id)
			}
		}
	}
	if includeStart {
		reach(start)
	} else {
		for _, id := range start {
			seen[id] = true
		}
		if err := w.load(ctx, start, limit); err != nil {
			return nil, err
		}
		for _, id := range start {
			if e := w.known[id]; e != nil {
				reach(e.prevs)
			}
		}
	}
	var out []*storage.Event
	for len(out) < limit {
		if len(pending) > 0 {
			if err := w.load(ctx, pending, limit-len(out)); err != nil {
				return nil, err
			}
			for _, id := range pending {
				if e := w.known[id]; e != nil {
					heap.Push(q, e)
				}
			}
			pending = pending[:0]
		}
		if q.Len() == 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e := heap.Pop(q).(*walkEvent)
		if e.row.Depth < minDepth {
			continue
		}
		out = append(out, e.row)
		reach(e.prevs)
	}
	return out, nil
}

// walker holds the events a walk has read.
type walker struct {
	db       *storage.DB
	room     *storage.Room
	minDepth int64
	// known: nil for an event that ends a branch (unknown, rejected, of
	// another room, or unreadable)
	known map[string]*walkEvent
	// budget bounds the events read ahead, so a room whose events at
	// some depth are not the ones the walk reaches (a wide fork) costs at
	// most a couple of walks' worth of rows.
	budget int
}

type walkEvent struct {
	row   *storage.Event
	prevs []string
}

// load reads the events of ids not read yet and, when the walk has more
// to visit, the room's events below them.
func (w *walker) load(ctx context.Context, ids []string, remaining int) error {
	var missing []string
	for _, id := range ids {
		if _, ok := w.known[id]; !ok {
			missing = append(missing, id)
			w.known[id] = nil
		}
	}
	if len(missing) == 0 {
		return nil
	}
	rows, err := w.db.EventsByID(ctx, missing)
	if err != nil {
		return fmt.Errorf("federation: walk: %w", err)
	}
	top, found := int64(0), false
	for _, row := range rows {
		if w.add(row) && (!found || row.Depth > top) {
			top, found = row.Depth, true
		}
	}
	if !found || top < w.minDepth || w.budget <= 0 {
		return nil
	}
	n := min(remaining+readAheadSlack, w.budget)
	below, err := w.db.EventsByDepth(ctx, w.room.NID, w.minDepth, top, n)
	if err != nil {
		return fmt.Errorf("federation: walk: %w", err)
	}
	w.budget -= len(below)
	for _, row := range below {
		if _, ok := w.known[row.ID]; !ok {
			w.add(row)
		}
	}
	return nil
}

// add remembers a row, telling whether the walk may visit it.
func (w *walker) add(row *storage.Event) bool {
	if !servableRow(w.room, row) {
		w.known[row.ID] = nil
		return false
	}
	prevs, err := prevEventIDs(row.JSON)
	if err != nil {
		w.known[row.ID] = nil
		return false
	}
	w.known[row.ID] = &walkEvent{row: row, prevs: prevs}
	return true
}

// prevEventIDs reads an event's prev_events: IDs from room version 3 on,
// [ID, hashes] pairs before.
func prevEventIDs(eventJSON []byte) ([]string, error) {
	var e struct {
		PrevEvents []json.RawMessage `json:"prev_events"`
	}
	if err := json.Unmarshal(eventJSON, &e); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(e.PrevEvents))
	for _, raw := range e.PrevEvents {
		var id string
		if json.Unmarshal(raw, &id) != nil {
			var pair []json.RawMessage
			if json.Unmarshal(raw, &pair) != nil || len(pair) == 0 || json.Unmarshal(pair[0], &id) != nil {
				return nil, fmt.Errorf("bad prev_events entry %s", raw)
			}
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// depthHeap pops the deepest (newest) event first.
type depthHeap []*walkEvent

func (h depthHeap) Len() int           { return len(h) }
func (h depthHeap) Less(i, j int) bool { return h[i].row.Depth > h[j].row.Depth }
func (h depthHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *depthHeap) Push(x any)        { *h = append(*h, x.(*walkEvent)) }
func (h *depthHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
