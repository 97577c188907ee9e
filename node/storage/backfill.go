package storage

import (
	"context"
	"fmt"
)

// Reads for serving a room's history to other servers (/backfill,
// /get_missing_events): events by the batch, not one query an event.

// EventsByID loads the stored events among ids (rejected ones too: the
// caller decides), in no particular order; unknown IDs are skipped.
func (db *DB) EventsByID(ctx context.Context, ids []string) ([]*Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	evs, err := db.scanEvents(db.Query(ctx, `SELECT `+eventCols+` FROM events
		WHERE event_id IN (SELECT value FROM json_each(?))`, jsonStrings(ids)))
	if err != nil {
		return nil, fmt.Errorf("storage: events by ID: %w", err)
	}
	return evs, nil
}

// EventsByDepth loads about limit (at least, at most twice) of a room's
// events with depth in [minDepth, maxDepth], deepest first: what walking
// the room's history back from maxDepth will most likely visit next.
func (db *DB) EventsByDepth(ctx context.Context, roomNID, minDepth, maxDepth int64, limit int) ([]*Event, error) {
	// A literal LIMIT (see withLimit), from a few sizes only: each size is
	// a statement of its own in the cache.
	n := 32
	for n < limit && n < 4096 {
		n *= 2
	}
	evs, err := db.scanEvents(db.Query(ctx, withLimit(`SELECT `+eventCols+` FROM events
		WHERE room_nid = ? AND depth BETWEEN ? AND ? ORDER BY depth DESC`, n), roomNID, minDepth, maxDepth))
	if err != nil {
		return nil, fmt.Errorf("storage: events of room %d by depth: %w", roomNID, err)
	}
	return evs, nil
}
