// Package backfill fetches a room's older history from other servers when
// a client pages back past the start of what this node holds (a late
// joiner, a node that was away): /backfill from up to five servers that
// were in the room, with /state_ids and /event for the state at the point
// where the history it gets begins.
//
// It feeds what it fetches to the roomserver as backfilled input, which
// keeps it out of the sync stream. It imports roomserver and
// gomatrixserverlib's federation client; it must not import clientapi,
// syncapi or federation (the node hands it federation's client).
package backfill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
)

// Client is the part of gomatrixserverlib's federation client backfill uses.
type Client interface {
	Backfill(ctx context.Context, origin, s spec.ServerName, roomID string, limit int, eventIDs []string) (gomatrixserverlib.Transaction, error)
	LookupStateIDs(ctx context.Context, origin, s spec.ServerName, roomID, eventID string) (fclient.RespStateIDs, error)
	GetEvent(ctx context.Context, origin, s spec.ServerName, eventID string) (gomatrixserverlib.Transaction, error)
}

// Backfiller fetches history for the rooms of one node.
type Backfiller struct {
	rs     *roomserver.Roomserver
	client Client
	origin spec.ServerName
	log    *slog.Logger

	mu     sync.Mutex
	rooms  map[string]*roomBackfill
	aheads int // read-aheads held or running, at most maxAheads
	closed bool
	wg     sync.WaitGroup // read-aheads running
}

// roomBackfill is one room's backfill state.
type roomBackfill struct {
	// one backfill per room at a time: concurrent /messages calls for the
	// same gap wait for the first and then find it filled.
	run sync.Mutex
	// the coming pages, each fetched and verified while the pages after
	// it are stored (see readAhead); guarded by Backfiller.mu
	ahead []*readAhead
}

// MinLimit and MaxLimit bound how many events one /backfill request asks
// for: what the client's page wants, but at least a useful batch and at
// most what one request should carry (and what the serving side caps it
// to).
const (
	MinLimit = 100
	MaxLimit = 1000
)

// maxServers bounds the servers one backfill tries.
const maxServers = 5

// timeout bounds one server's part of a backfill.
const timeout = 20 * time.Second

// New returns a Backfiller for the node named origin.
func New(rs *roomserver.Roomserver, client Client, origin spec.ServerName, log *slog.Logger) *Backfiller {
	if log == nil {
		log = slog.Default()
	}
	return &Backfiller{rs: rs, client: client, origin: origin, log: log, rooms: map[string]*roomBackfill{}}
}

// Close stops the pages being read ahead and waits for them. Backfill
// still works after Close, without reading ahead.
func (b *Backfiller) Close() {
	b.mu.Lock()
	b.closed = true
	for _, st := range b.rooms {
		b.dropFrom(st, 0)
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// Backfill fetches about limit events of a room's history from before
// the oldest event this node holds, trying the servers most likely to have
// it until one answers. It reports whether it stored any. A room whose
// timeline already reaches its creation needs nothing.
//
// While it stores a page it fetches and verifies the next one from the
// same server, for the next call: a client paging back through history
// then waits for storing alone.
func (b *Backfiller) Backfill(ctx context.Context, roomID string, limit int) (bool, error) {
	st := b.room(roomID)
	st.run.Lock()
	defer st.run.Unlock()

	from, oldest, err := b.rs.BackwardExtremities(ctx, roomID)
	if err != nil || len(from) == 0 {
		b.dropAhead(st)
		return false, err
	}
	version, err := b.rs.RoomVersion(ctx, roomID)
	if err != nil {
		return false, err
	}
	limit = min(max(limit, MinLimit), MaxLimit)
	if p := b.takeAhead(ctx, st, version, from); p != nil {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		n, err := b.store(sctx, st, roomID, version, p, limit)
		cancel()
		if err == nil && n > 0 {
			b.log.Debug("backfilled", "room", roomID, "server", p.server, "events", n, "read_ahead", true)
			return true, nil
		}
		if err != nil {
			b.log.Info("backfill: the page read ahead was not stored", "room", roomID, "server", p.server, "err", err)
		}
		// Whatever went wrong, the servers are asked afresh.
	}
	servers, err := b.servers(ctx, roomID, oldest)
	if err != nil {
		return false, err
	}
	var errs []error
	for _, s := range servers {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		p := b.fetchPage(sctx, st, nil, s, roomID, version, from, limit)
		n, err := 0, p.err
		if err == nil {
			n, err = b.store(sctx, st, roomID, version, p, limit)
		}
		cancel()
		if err == nil && n > 0 {
			b.log.Debug("backfilled", "room", roomID, "server", s, "events", n)
			return true, nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) > 0 {
		return false, fmt.Errorf("backfill %s: %w", roomID, errors.Join(errs...))
	}
	return false, nil
}

func (b *Backfiller) room(roomID string) *roomBackfill {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.rooms[roomID]
	if st == nil {
		st = &roomBackfill{}
		b.rooms[roomID] = st
	}
	return st
}

// servers lists who to ask, best first: the servers with members joined
// at the point in history we start from (the oldest event we hold), then
// those joined now; never ourselves; at most maxServers.
func (b *Backfiller) servers(ctx context.Context, roomID, oldest string) ([]spec.ServerName, error) {
	var out []spec.ServerName
	add := func(state []gomatrixserverlib.PDU) {
		counts := map[spec.ServerName]int{}
		for _, ev := range state {
			if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
				continue
			}
			if m, _ := ev.Membership(); m != spec.Join {
				continue
			}
			_, s, err := gomatrixserverlib.SplitID('@', *ev.StateKey())
			if err == nil && s != b.origin && !slices.Contains(out, s) {
				counts[s]++
			}
		}
		// Servers with more members then were more likely there longest.
		names := make([]spec.ServerName, 0, len(counts))
		for s := range counts {
			names = append(names, s)
		}
		sort.Slice(names, func(i, j int) bool {
			if counts[names[i]] != counts[names[j]] {
				return counts[names[i]] > counts[names[j]]
			}
			return names[i] < names[j]
		})
		out = append(out, names...)
	}
	then, err := b.rs.StateBefore(ctx, oldest)
	if err != nil && !errors.Is(err, roomserver.ErrEventNotFound) {
		return nil, err
	}
	add(then)
	now, err := b.rs.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	add(now)
	if len(out) > maxServers {
		out = out[:maxServers]
	}
	return out, nil
}
