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
	"encoding/json"
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

	// one backfill per room at a time: concurrent /messages calls for the
	// same gap wait for the first and then find it filled.
	mu    sync.Mutex
	rooms map[string]*sync.Mutex
}

// MinLimit and MaxLimit bound how many events one /backfill request asks
// for: what the client's page wants, but at least a useful batch and at
// most what one request should carry.
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
	return &Backfiller{rs: rs, client: client, origin: origin, log: log, rooms: map[string]*sync.Mutex{}}
}

// Backfill fetches about limit events of a room's history from before
// the oldest event this node holds, trying the servers most likely to have
// it until one answers. It reports whether it stored any. A room whose
// timeline already reaches its creation needs nothing.
func (b *Backfiller) Backfill(ctx context.Context, roomID string, limit int) (bool, error) {
	lock := b.roomLock(roomID)
	lock.Lock()
	defer lock.Unlock()

	from, oldest, err := b.rs.BackwardExtremities(ctx, roomID)
	if err != nil || len(from) == 0 {
		return false, err
	}
	servers, err := b.servers(ctx, roomID, oldest)
	if err != nil {
		return false, err
	}
	var errs []error
	for _, s := range servers {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		n, err := b.from(sctx, s, roomID, from, min(max(limit, MinLimit), MaxLimit))
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

func (b *Backfiller) roomLock(roomID string) *sync.Mutex {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.rooms[roomID]
	if l == nil {
		l = &sync.Mutex{}
		b.rooms[roomID] = l
	}
	return l
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

// from backfills from one server, returning how many events it stored.
func (b *Backfiller) from(ctx context.Context, s spec.ServerName, roomID string, ids []string, limit int) (int, error) {
	version, err := b.rs.RoomVersion(ctx, roomID)
	if err != nil {
		return 0, err
	}
	txn, err := b.client.Backfill(ctx, b.origin, s, roomID, limit, ids)
	if err != nil {
		return 0, err
	}
	evs := parse(txn.PDUs, version, roomID)
	if len(evs) == 0 {
		return 0, nil
	}
	// Oldest first, so each event's prev events are in before it.
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })

	var prevs []string
	for _, ev := range evs {
		prevs = append(prevs, ev.PrevEventIDs()...)
	}
	_, inTimeline, err := b.rs.Have(ctx, prevs)
	if err != nil {
		return 0, err
	}
	batch := map[string]bool{}
	input := make([]roomserver.InputEvent, 0, len(evs))
	for _, ev := range evs {
		in := roomserver.InputEvent{Origin: string(s), RoomVersion: version, JSON: ev.JSON(), Backfilled: true}
		// Where the history we got begins (its prev events neither here
		// nor in this batch), the state before it comes from the server.
		if slices.ContainsFunc(ev.PrevEventIDs(), func(p string) bool { return !inTimeline[p] && !batch[p] }) {
			if in.StateBefore, err = b.stateBefore(ctx, s, roomID, version, ev.EventID()); err != nil {
				return 0, err
			}
		}
		batch[ev.EventID()] = true
		input = append(input, in)
	}
	stored := 0
	for i, res := range b.rs.Input(ctx, input) {
		var rej *roomserver.RejectedError
		switch {
		case res.Err == nil:
			stored++
		case errors.As(res.Err, &rej):
			// Kept as rejected: never served, and never asked for again.
		default:
			b.log.Info("backfilled event not stored", "room", roomID, "event", evs[i].EventID(), "err", res.Err)
		}
	}
	return stored, nil
}

// stateBefore asks s for the state before an event and makes sure every
// event of it (and of its auth chain) is stored, returning the state's
// event IDs.
func (b *Backfiller) stateBefore(ctx context.Context, s spec.ServerName, roomID string, version gomatrixserverlib.RoomVersion, eventID string) ([]string, error) {
	ids, err := b.client.LookupStateIDs(ctx, b.origin, s, roomID, eventID)
	if err != nil {
		return nil, fmt.Errorf("state_ids at %s: %w", eventID, err)
	}
	if err := b.fetch(ctx, s, roomID, version, append(append([]string{}, ids.AuthEventIDs...), ids.StateEventIDs...)); err != nil {
		return nil, err
	}
	return ids.StateEventIDs, nil
}

// fetch stores the events we lack among ids as outliers, oldest first so
// each one's auth events are in before it.
func (b *Backfiller) fetch(ctx context.Context, s spec.ServerName, roomID string, version gomatrixserverlib.RoomVersion, ids []string) error {
	stored, _, err := b.rs.Have(ctx, ids)
	if err != nil {
		return err
	}
	var evs []gomatrixserverlib.PDU
	for _, id := range ids {
		if stored[id] {
			continue
		}
		txn, err := b.client.GetEvent(ctx, b.origin, s, id)
		if err != nil {
			return fmt.Errorf("event %s: %w", id, err)
		}
		got := parse(txn.PDUs, version, roomID)
		if len(got) != 1 || got[0].EventID() != id {
			return fmt.Errorf("event %s: the server sent something else", id)
		}
		evs = append(evs, got[0])
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	in := make([]roomserver.InputEvent, len(evs))
	for i, ev := range evs {
		in[i] = roomserver.InputEvent{Origin: string(s), RoomVersion: version, JSON: ev.JSON(), Outlier: true}
	}
	for i, res := range b.rs.Input(ctx, in) {
		if res.Err != nil {
			return fmt.Errorf("state event %s: %w", evs[i].EventID(), res.Err)
		}
	}
	return nil
}

// parse reads the events of a federation answer that belong to roomID. It
// checks nothing: the roomserver verifies what it is given.
func parse(pdus []json.RawMessage, version gomatrixserverlib.RoomVersion, roomID string) []gomatrixserverlib.PDU {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil
	}
	out := make([]gomatrixserverlib.PDU, 0, len(pdus))
	for _, js := range pdus {
		ev, err := verImpl.NewEventFromUntrustedJSON(js)
		if err == nil && ev.RoomID().String() == roomID {
			out = append(out, ev)
		}
	}
	return out
}
