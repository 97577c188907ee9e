package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
)

// Bounds on filling a gap.
const (
	// missingLimit is how many events one /get_missing_events asks for;
	// a bigger gap is bridged with the state at its newest part (the
	// older history comes with backfill, on demand).
	missingLimit = 100
	// fetchOneByOne is how many missing state events are fetched with
	// /event before a whole /state is cheaper.
	fetchOneByOne = 8
)

// gap is one room's missing history, being filled from origin.
type gap struct {
	origin  string
	roomID  string
	version gomatrixserverlib.RoomVersion
}

func (f *Federation) input(ctx context.Context, g *gap, ev gomatrixserverlib.PDU, stateBefore []string) roomserver.InputResult {
	return f.rs.Input(ctx, []roomserver.InputEvent{{
		Origin: g.origin, RoomVersion: g.version, JSON: ev.JSON(), StateBefore: stateBefore,
	}})[0]
}

// ensure inputs ev, first fetching from g.origin what it lacks: its auth
// events (/event_auth), its prev events (/get_missing_events), or, when
// those do not connect to what we hold, the state before it
// (/state_ids).
func (f *Federation) ensure(ctx context.Context, g *gap, ev gomatrixserverlib.PDU) error {
	if err := f.awaitState(ctx, g.roomID); err != nil {
		return err
	}
	triedMissing := false
	for attempt := 0; attempt < 4; attempt++ {
		res := f.input(ctx, g, ev, nil)
		var me *roomserver.MissingEventsError
		if !errors.As(res.Err, &me) {
			return res.Err
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("federation: gap before %s not filled in time: %w", ev.EventID(), err)
		}
		var err error
		switch {
		case me.State:
			return f.inputWithState(ctx, g, ev)
		case overlaps(me.IDs, authDeps(ev)):
			err = f.fetchAuth(ctx, g, ev)
		case !triedMissing:
			triedMissing = true
			err = f.fetchMissing(ctx, g, ev)
		default:
			return f.inputWithState(ctx, g, ev)
		}
		if err != nil {
			return err
		}
	}
	return fmt.Errorf("federation: could not fill the gap before %s", ev.EventID())
}

func overlaps(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

// awaitState waits while a room has no state yet: a join of ours is
// being stored. Filling a gap before it would fetch history from before
// the join as if it were new.
func (f *Federation) awaitState(ctx context.Context, roomID string) error {
	for {
		row, err := f.db.RoomByID(ctx, roomID)
		if err != nil {
			return fmt.Errorf("federation: room %s: %w", roomID, err)
		}
		if row.SnapshotNID != 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("federation: this server is not in room %s", roomID)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// fetchMissing asks g.origin for the events between our forward
// extremities and ev, and inputs them oldest first. Where they still do
// not connect to what we hold, the oldest is input with the state before
// it, fetched from g.origin.
func (f *Federation) fetchMissing(ctx context.Context, g *gap, ev gomatrixserverlib.PDU) error {
	earliest, minDepth, err := f.extremities(ctx, g.roomID)
	if err != nil {
		return fmt.Errorf("federation: extremities of %s: %w", g.roomID, err)
	}
	f.log.Debug("fetching missing events", "room", g.roomID, "before", ev.EventID(), "from", g.origin)
	resp, err := f.client.LookupMissingEvents(ctx, f.cfg.ServerName, spec.ServerName(g.origin), g.roomID,
		fclient.MissingEvents{Limit: missingLimit, MinDepth: int(minDepth), EarliestEvents: earliest, LatestEvents: []string{ev.EventID()}},
		g.version)
	if err != nil {
		return fmt.Errorf("federation: get_missing_events from %s: %w", g.origin, err)
	}
	var evs []gomatrixserverlib.PDU
	for _, p := range parseEvents(g.version, g.roomID, resp.Events) {
		if p.EventID() != ev.EventID() {
			evs = append(evs, p)
		}
	}
	evs = topoOrder(evs, prevDeps)
	for len(evs) > 0 {
		in := make([]roomserver.InputEvent, len(evs))
		for i, p := range evs {
			in[i] = roomserver.InputEvent{Origin: g.origin, RoomVersion: g.version, JSON: p.JSON()}
		}
		res := f.rs.Input(ctx, in)
		stuck := -1
		for i, r := range res {
			var me *roomserver.MissingEventsError
			if errors.As(r.Err, &me) {
				stuck = i
				break
			}
		}
		if stuck < 0 {
			return nil
		}
		// The oldest event that does not connect: take the state before it
		// from the origin, then go on with the events after it.
		if err := f.inputWithState(ctx, g, evs[stuck]); err != nil {
			return err
		}
		evs = evs[stuck+1:]
	}
	return nil
}

// fetchAuth fetches ev's auth chain from g.origin and inputs it.
func (f *Federation) fetchAuth(ctx context.Context, g *gap, ev gomatrixserverlib.PDU) error {
	resp, err := f.client.GetEventAuth(ctx, f.cfg.ServerName, spec.ServerName(g.origin), g.version, g.roomID, ev.EventID())
	if err != nil {
		return fmt.Errorf("federation: event_auth from %s: %w", g.origin, err)
	}
	f.inputOutliers(ctx, g, parseEvents(g.version, g.roomID, resp.AuthEvents))
	return nil
}

// inputOutliers stores events without state (state and auth chains).
// Refused ones are logged and skipped. It returns the IDs stored.
func (f *Federation) inputOutliers(ctx context.Context, g *gap, evs []gomatrixserverlib.PDU) map[string]bool {
	raws := make([][]byte, len(evs))
	for i, e := range evs {
		raws[i] = e.JSON()
	}
	stored := map[string]bool{}
	for _, id := range f.inputOutlierJSON(ctx, g, raws) {
		if id != "" {
			stored[id] = true
		}
	}
	return stored
}

// probe is what ordering and checking a state answer needs of an event,
// read without parsing (and hashing) it: the roomserver does that once.
type probe struct {
	RoomID   string          `json:"room_id"`
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key"`
	Depth    int64           `json:"depth"`
	Content  json.RawMessage `json:"content"`
}

// isCreateOf reports whether an event without room_id is the create
// event of g's room: in version 12 the room ID derives from it.
func (f *Federation) isCreateOf(g *gap, p probe, raw []byte) bool {
	if p.RoomID != "" || p.Type != spec.MRoomCreate {
		return false
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(g.version)
	if err != nil {
		return false
	}
	ev, err := roomserver.ParseUntrusted(verImpl, raw)
	return err == nil && ev.RoomID().String() == g.roomID
}

// inputOutlierJSON stores events without state, oldest (by depth) first.
// An event whose auth events come later in the list (depth is only a
// hint) is retried after the others, while that makes progress. It
// returns, per input, the stored event's ID ("" if it was refused).
func (f *Federation) inputOutlierJSON(ctx context.Context, g *gap, raws [][]byte) []string {
	ids := make([]string, len(raws))
	depth := make([]int64, len(raws))
	var pending []int
	for i, raw := range raws {
		var p probe
		if json.Unmarshal(raw, &p) != nil {
			continue
		}
		if p.RoomID != g.roomID && !f.isCreateOf(g, p, raw) {
			continue
		}
		depth[i] = p.Depth
		pending = append(pending, i)
	}
	sort.SliceStable(pending, func(a, b int) bool { return depth[pending[a]] < depth[pending[b]] })
	for len(pending) > 0 {
		in := make([]roomserver.InputEvent, len(pending))
		for k, i := range pending {
			in[k] = roomserver.InputEvent{Origin: g.origin, RoomVersion: g.version, JSON: raws[i], Outlier: true}
		}
		var retry []int
		progress := false
		for k, r := range f.rs.Input(ctx, in) {
			var me *roomserver.MissingEventsError
			switch {
			case r.Err == nil:
				ids[pending[k]] = r.EventID
				progress = true
			case errors.As(r.Err, &me):
				retry = append(retry, pending[k])
			default:
				f.log.Info("refused a state or auth event", "room", g.roomID, "event", r.EventID, "from", g.origin, "err", r.Err)
			}
		}
		if !progress {
			if len(retry) > 0 {
				f.log.Info("state or auth events whose auth events are missing", "room", g.roomID, "count", len(retry), "from", g.origin)
			}
			break
		}
		pending = retry
	}
	return ids
}

// inputWithState inputs ev with the state before it as g.origin has it,
// fetching the state events we lack.
func (f *Federation) inputWithState(ctx context.Context, g *gap, ev gomatrixserverlib.PDU) error {
	f.log.Debug("taking the state before an event from its sender", "room", g.roomID, "event", ev.EventID(), "from", g.origin)
	ids, err := f.client.LookupStateIDs(ctx, f.cfg.ServerName, spec.ServerName(g.origin), g.roomID, ev.EventID())
	if err != nil {
		return fmt.Errorf("federation: state_ids from %s: %w", g.origin, err)
	}
	if err := f.fetchEvents(ctx, g, ev.EventID(), append(append([]string{}, ids.StateEventIDs...), ids.AuthEventIDs...)); err != nil {
		return err
	}
	have, err := f.known(ctx, ids.StateEventIDs)
	if err != nil {
		return err
	}
	state := make([]string, 0, len(have))
	for _, id := range ids.StateEventIDs {
		if have[id] {
			state = append(state, id)
		}
	}
	return f.input(ctx, g, ev, state).Err
}

// fetchEvents fetches and stores (as outliers) those of ids we lack: one
// by one when they are few, else the whole state at atEvent.
func (f *Federation) fetchEvents(ctx context.Context, g *gap, atEvent string, ids []string) error {
	have, err := f.known(ctx, ids)
	if err != nil {
		return err
	}
	var need []string
	needed := map[string]bool{}
	for _, id := range ids {
		if !have[id] && !needed[id] {
			needed[id] = true
			need = append(need, id)
		}
	}
	if len(need) == 0 {
		return nil
	}
	var evs []gomatrixserverlib.PDU
	if len(need) <= fetchOneByOne {
		for _, id := range need {
			txn, err := f.client.GetEvent(ctx, f.cfg.ServerName, spec.ServerName(g.origin), id)
			if err != nil {
				f.log.Info("fetching a state event", "event", id, "from", g.origin, "err", err)
				continue
			}
			raws := make([]spec.RawJSON, len(txn.PDUs))
			for i, p := range txn.PDUs {
				raws[i] = spec.RawJSON(p)
			}
			evs = append(evs, parseEvents(g.version, g.roomID, raws)...)
		}
	} else {
		st, err := f.client.LookupState(ctx, f.cfg.ServerName, spec.ServerName(g.origin), g.roomID, atEvent, g.version)
		if err != nil {
			return fmt.Errorf("federation: state from %s: %w", g.origin, err)
		}
		for _, p := range parseEvents(g.version, g.roomID, append(st.StateEvents, st.AuthEvents...)) {
			if needed[p.EventID()] {
				evs = append(evs, p)
			}
		}
	}
	f.inputOutliers(ctx, g, evs)
	return nil
}
