package roomserver

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/storage"
)

// InputEvent is an event from another server.
type InputEvent struct {
	// Origin is the server that sent it to us.
	Origin string
	// RoomVersion is needed when the room is new to us (joins, invites);
	// otherwise the room's own version is used.
	RoomVersion gomatrixserverlib.RoomVersion
	JSON        []byte
	// Outlier events are stored without state: auth chains and the state
	// a join hands us. They never enter the stream.
	Outlier bool
	// StateBefore, when set, is the state before the event (from
	// send_join or /state_ids), used instead of the state after its prev
	// events, which we may not have. Every listed event must be stored.
	StateBefore []string
	// Backfilled events are history older than what we hold: stored with
	// their state, but never in the sync stream, never a forward
	// extremity, and they never change the current state.
	Backfilled bool
}

// InputResult is what became of one input event. Err is nil when the event
// was stored (SoftFailed: stored, but not in the timeline, because the
// room's current state forbids it).
type InputResult struct {
	EventID    string
	SoftFailed bool
	Err        error
}

// RejectedError is an event that failed auth: it is stored as rejected,
// so it is never served or fetched again, and never counts as state.
type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string { return "roomserver: rejected: " + e.Reason }

// MissingEventsError names the auth or prev events (or the state at prev
// events) needed before an event can be processed; federation fetches
// them and tries again.
type MissingEventsError struct {
	IDs   []string
	State bool // the events are known but their state is not
}

func (e *MissingEventsError) Error() string {
	what := "events"
	if e.State {
		what = "state at events"
	}
	return fmt.Sprintf("roomserver: missing %s %s", what, strings.Join(e.IDs, ", "))
}

// remoteEvent is a parsed, verified input event waiting in the input log.
type remoteEvent struct {
	seq         int64
	pdu         gomatrixserverlib.PDU
	outlier     bool
	backfilled  bool
	stateBefore []string
	res         *InputResult
}

// Verified is an event from another server whose hashes and signatures
// Verify has checked, as InputVerified takes it. The caller may still set
// Outlier, StateBefore and Backfilled (backfill decides StateBefore from
// the parsed event's prev events); JSON and RoomVersion are not read
// again: the event is the one Verify parsed.
type Verified struct {
	InputEvent
	// Err is why the event was refused; nil if it passed.
	Err error
	pdu gomatrixserverlib.PDU
}

// PDU is the parsed event (its ID already worked out), or nil if it was
// refused.
func (v *Verified) PDU() gomatrixserverlib.PDU { return v.pdu }

// Verify parses events from other servers, checks their hashes and
// signatures and works out their IDs (a hash of the redacted event): most
// of what accepting an event from another server costs. A large batch
// goes to the Checker when there is one; otherwise events are checked on
// every core (or Config.VerifyWidth at once).
func (rs *Roomserver) Verify(ctx context.Context, evs []InputEvent) []Verified {
	out := make([]Verified, len(evs))
	if rs.cfg.Checker != nil && len(evs) >= checkerMin && rs.verifyElsewhere(ctx, evs, out) {
		return out
	}
	width := rs.cfg.VerifyWidth
	if width <= 0 {
		width = runtime.GOMAXPROCS(0)
	}
	parallel(width, len(evs), func(i int) {
		out[i] = Verified{InputEvent: evs[i]}
		out[i].pdu, out[i].Err = rs.parseUntrusted(ctx, evs[i])
	})
	return out
}

// Input processes events from other servers. Each event's signatures and
// hashes are checked (on every core: it is most of the cost), and each
// room's worker checks auth (against the event's auth events, the state
// before it, and the current state) and stores them. Input returns once
// every event is stored or refused.
//
// New events for a room whose worker is busy wait for it in the durable
// input log, which a restart delivers. A room whose worker is free takes
// them at once, and its commit stores them: logging them first would
// cost a commit (a millisecond in the browser, on every received
// message) and buy nothing, since Input has not answered and the sender
// sends again. History (backfilled) and outliers are never logged:
// whoever asked for them asks again.
func (rs *Roomserver) Input(ctx context.Context, evs []InputEvent) []InputResult {
	return rs.InputVerified(ctx, rs.Verify(ctx, evs))
}

// InputVerified is Input for events Verify has checked: backfill verifies
// a page of history once, works out from the parsed events which need
// the state before them, and then stores them.
func (rs *Roomserver) InputVerified(ctx context.Context, evs []Verified) []InputResult {
	results := make([]InputResult, len(evs))
	var accepted []*remoteEvent
	for i := range evs {
		in := &evs[i]
		switch {
		case in.Err != nil:
			results[i].Err = in.Err
			continue
		case in.pdu == nil: // a Verified that Verify did not make
			results[i].Err = &BadEventError{Reason: "event not verified"}
			continue
		}
		results[i].EventID = in.pdu.EventID()
		re := &remoteEvent{pdu: in.pdu, outlier: in.Outlier, backfilled: in.Backfilled, stateBefore: in.StateBefore, res: &results[i]}
		accepted = append(accepted, re)
	}
	if len(accepted) > 0 {
		rs.dispatch(ctx, accepted)
	}
	return results
}

// appendInputLog writes events to the durable input log, each taking its
// sequence number. Nothing to log (history, outliers) costs no write.
func (rs *Roomserver) appendInputLog(ctx context.Context, logged []*remoteEvent) error {
	if len(logged) == 0 {
		return nil
	}
	err := rs.db.Write(ctx, func(tx *storage.Tx) error {
		for _, re := range logged {
			seq, err := storage.AppendInputLog(tx, storage.LoggedInput{
				RoomID: re.pdu.RoomID().String(), Version: string(re.pdu.Version()), Outlier: re.outlier,
				Backfilled: re.backfilled, StateBefore: re.stateBefore, JSON: re.pdu.JSON(),
			})
			if err != nil {
				return err
			}
			re.seq = seq
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("roomserver: input log: %w", err)
	}
	return nil
}

// parallel runs f(0)…f(n-1), up to width at once.
func parallel(width, n int, f func(i int)) {
	workers := min(width, n)
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// dispatch hands events to their rooms' workers and waits for them,
// logging first those that must wait for a busy worker.
func (rs *Roomserver) dispatch(ctx context.Context, evs []*remoteEvent) {
	// One batch per room, in the order the rooms first appear.
	var batches []roomBatch
	index := map[string]int{}
	for _, re := range evs {
		id := re.pdu.RoomID().String()
		i, ok := index[id]
		if !ok {
			i = len(batches)
			index[id] = i
			batches = append(batches, roomBatch{roomID: id})
		}
		batches[i].evs = append(batches[i].evs, re)
	}
	var logged []*remoteEvent
	for i := range batches {
		b := &batches[i]
		var err error
		if b.r, err = rs.remoteWorker(ctx, b.roomID, b.evs[0].pdu.Version()); err != nil {
			b.fail(err)
			continue
		}
		if !b.r.idle.Load() {
			for _, re := range b.evs {
				if re.seq == 0 && !re.outlier && !re.backfilled {
					logged = append(logged, re)
				}
			}
		}
	}
	if err := rs.appendInputLog(ctx, logged); err != nil {
		for _, re := range evs {
			re.res.Err = err
		}
		return
	}
	var reqs []*request
	for _, b := range batches {
		if b.r == nil {
			continue
		}
		req := &request{ctx: context.WithoutCancel(ctx), remote: b.evs, done: make(chan result, 1)}
		if err := b.r.enqueue(ctx, req); err != nil {
			b.fail(err)
			continue
		}
		reqs = append(reqs, req)
	}
	for _, req := range reqs {
		if res := <-req.done; res.err != nil {
			for _, re := range req.remote {
				if re.res.Err == nil {
					re.res.Err = res.err
				}
			}
		}
	}
}

// roomBatch is one room's share of an input, and its worker.
type roomBatch struct {
	roomID string
	evs    []*remoteEvent
	r      *room
}

func (b *roomBatch) fail(err error) {
	for _, re := range b.evs {
		re.res.Err = err
	}
}

// remoteWorker is worker for rooms that may be new to us: a room first
// heard of from another server gets a row (with no state yet).
func (rs *Roomserver) remoteWorker(ctx context.Context, roomID string, version gomatrixserverlib.RoomVersion) (*room, error) {
	r, err := rs.worker(ctx, roomID)
	if !errors.Is(err, ErrRoomNotFound) {
		return r, err
	}
	err = rs.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := storage.RoomNIDTx(tx, roomID); err == nil {
			return nil // created by a concurrent input
		}
		_, err := storage.InsertRoom(tx, roomID, string(version))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("roomserver: new room %s: %w", roomID, err)
	}
	return rs.worker(ctx, roomID)
}

// Recover redelivers the input log after a restart.
func (rs *Roomserver) Recover(ctx context.Context) error {
	logged, err := rs.db.InputLog(ctx)
	if err != nil {
		return fmt.Errorf("roomserver: recover input log: %w", err)
	}
	evs := make([]*remoteEvent, 0, len(logged))
	for _, l := range logged {
		pdu, err := parseLogged(l.Version, l.JSON)
		if err != nil {
			log.Warn("dropping unparseable input log entry", "seq", l.Seq, "err", err)
			rs.db.Write(ctx, func(tx *storage.Tx) error { return storage.DeleteInputLog(tx, l.Seq) })
			continue
		}
		evs = append(evs, &remoteEvent{seq: l.Seq, pdu: pdu, outlier: l.Outlier, backfilled: l.Backfilled, stateBefore: l.StateBefore, res: &InputResult{}})
	}
	if len(evs) > 0 {
		log.Info("redelivering input log", "events", len(evs))
		rs.dispatch(ctx, evs)
	}
	return nil
}

// parseUntrusted parses another server's event and checks its hashes and
// signatures (see checkEvent), and gives it its ID.
func (rs *Roomserver) parseUntrusted(ctx context.Context, in InputEvent) (gomatrixserverlib.PDU, error) {
	verImpl, err := rs.precheck(ctx, in)
	if err != nil {
		return nil, err
	}
	c, err := checkEvent(ctx, verImpl, in.JSON, rs.cfg.Verifier)
	if err != nil {
		return nil, err
	}
	return parseChecked(verImpl, c)
}

// precheck is what refusing an event from another server takes before
// parsing it: its room's version (the one given, or the room's as this
// server knows it) must be one it supports, and its size within limits.
func (rs *Roomserver) precheck(ctx context.Context, in InputEvent) (gomatrixserverlib.IRoomVersion, error) {
	version := in.RoomVersion
	if version == "" {
		roomID, err := roomIDOf(in.JSON)
		if err != nil {
			return nil, &BadEventError{Reason: err.Error()}
		}
		if version, err = rs.RoomVersion(ctx, roomID); err != nil {
			return nil, err
		}
	}
	verImpl, err := supportedVersion(version)
	if err != nil {
		return nil, err
	}
	if len(in.JSON) > MaxEventSize {
		return nil, ErrTooLarge
	}
	return verImpl, nil
}

// roomIDOf reads room_id from event JSON without parsing the event.
func roomIDOf(js []byte) (string, error) {
	var v struct {
		RoomID string `json:"room_id"`
	}
	if err := jsonUnmarshal(js, &v); err != nil || v.RoomID == "" {
		return "", errors.New("event has no room_id")
	}
	return v.RoomID, nil
}

// plainAuthKey is the key under which the auth rules' verdict on ev
// against the auth events authIDs is remembered, if ev is an event they
// judge by its room, sender and type and those auth events alone: not a
// state event, and of no type with rules of its own. Event IDs name
// their content, so the verdict stands for every such event alike (most
// of a room's history: its messages).
func plainAuthKey(ev gomatrixserverlib.PDU, authIDs []string) (string, bool) {
	if ev.StateKey() != nil {
		return "", false
	}
	switch ev.Type() {
	case spec.MRoomCreate, spec.MRoomAliases, spec.MRoomMember, spec.MRoomPowerLevels, spec.MRoomRedaction:
		return "", false
	}
	ids := slices.Sorted(slices.Values(authIDs))
	return string(ev.SenderID()) + "\x00" + ev.Type() + "\x00" + strings.Join(ids, "\x00"), true
}

// maxAllowed bounds a room's remembered auth verdicts.
const maxAllowed = 512

// rememberAllowed remembers that the auth rules allowed the events of
// key (see plainAuthKey).
func (r *room) rememberAllowed(key string) {
	if len(r.allowed) >= maxAllowed || r.allowed == nil {
		r.allowed = make(map[string]struct{}, maxAllowed)
	}
	r.allowed[key] = struct{}{}
}

// createEventID is the create event's ID in rooms whose ID derives from it.
func (r *room) createEventID() string {
	if r.ver.DomainlessRoomIDs() {
		return "$" + r.row.ID[1:]
	}
	return ""
}

// input stores one remote event, following the spec's checks in order.
func (r *room) input(tx *storage.Tx, re *remoteEvent) (*Output, error) {
	ev := re.pdu
	res := re.res
	old, err := r.eventMeta(tx, ev.EventID())
	switch {
	case err == nil && old.Rejected:
		res.Err = &RejectedError{Reason: "previously rejected"}
		return nil, nil
	case err == nil && !(old.SnapshotNID == 0 && re.backfilled):
		// Seen before, and as good as stored now. (Only an outlier that
		// backfill meets again as history is taken up into the timeline.)
		return nil, nil
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		return nil, err
	case err != nil:
		old = nil
	}

	// 1. Auth against the event's own auth events.
	authIDs := ev.AuthEventIDs()
	isCreate := ev.Type() == spec.MRoomCreate && ev.StateKeyEquals("")
	if c := r.createEventID(); c != "" && !isCreate && !slices.Contains(authIDs, c) {
		authIDs = append(authIDs, c)
	}
	authRows, missing, err := r.eventsByID(tx, authIDs)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		res.Err = &MissingEventsError{IDs: missing}
		return nil, nil
	}
	authNIDs := make([]int64, 0, len(authRows))
	for _, row := range authRows {
		if row.Rejected {
			return nil, r.storeRejected(tx, ev, 0, res, "auth event "+row.ID+" was rejected")
		}
		authNIDs = append(authNIDs, row.NID)
	}
	key, plain := plainAuthKey(ev, authIDs)
	if _, seen := r.allowed[key]; !plain || !seen {
		provider, err := r.authEventsOf(tx, authNIDs)
		var bad *badAuthEventsError
		switch {
		case errors.As(err, &bad):
			return nil, r.storeRejected(tx, ev, 0, res, bad.Error())
		case err != nil:
			return nil, err
		}
		if err := gomatrixserverlib.Allowed(ev, provider, userIDForSender); err != nil {
			return nil, r.storeRejected(tx, ev, 0, res, err.Error())
		}
		if plain {
			r.rememberAllowed(key)
		}
	}
	if re.outlier {
		_, err := r.insert(tx, ev, 0, false)
		return nil, err
	}

	// 2. Auth against the state before the event.
	before, err := r.stateBefore(tx, ev, re.stateBefore, res)
	if err != nil || res.Err != nil {
		return nil, err
	}
	beforeNIDs, err := r.authNIDs(tx, before.state, ev)
	if err != nil {
		return nil, err
	}
	// The auth rules read nothing but the event and the auth events they
	// look up: when the state before holds exactly the event's own auth
	// events (every message of a linear history), this check would give
	// the answer the first one gave.
	if !sameNIDs(beforeNIDs, authNIDs) {
		beforeAuth, err := r.authEventsOf(tx, beforeNIDs)
		if err != nil {
			return nil, err
		}
		if err := gomatrixserverlib.Allowed(ev, beforeAuth, userIDForSender); err != nil {
			return nil, r.storeRejected(tx, ev, before.nid, res, "state before: "+err.Error())
		}
	}

	if re.backfilled {
		return nil, r.storeBackfilled(tx, ev, old, before.nid)
	}

	// 3. Auth against the current state: failing here soft-fails the
	// event, which is kept but neither served to clients nor built on.
	if r.row.SnapshotNID != 0 {
		if err := gomatrixserverlib.Allowed(ev, &r.st, userIDForSender); err != nil {
			if _, err := r.insert(tx, ev, before.nid, false); err != nil {
				return nil, err
			}
			res.SoftFailed = true
			log.Info("soft-failed event", "room", r.row.ID, "event", ev.EventID(), "reason", err)
			return nil, nil
		}
	}

	if re.stateBefore != nil {
		// The state before this event came from another server (a join):
		// record the jump as its own stream row, with no event, so the
		// event's own row changes only what the event changes and sync
		// sees the room's state as it was before it.
		if err := r.jump(tx, before); err != nil {
			return nil, err
		}
	}
	pos, err := storage.NextStreamPos(tx)
	if err != nil {
		return nil, err
	}
	row, err := r.insertAt(tx, ev, before.nid, false, pos)
	if err != nil {
		return nil, err
	}
	return r.advance(tx, ev, row.NID, pos, before)
}

// prefetchMeta loads, in one query, the rows of every event a batch of
// remote events refers to (themselves, their prev and auth events), so
// checking a batch of backfilled history costs one query, not several an
// event. Rows the batch inserts are added as it goes.
func (r *room) prefetchMeta(tx *storage.Tx, evs []*remoteEvent) error {
	// Each ID once: a page of history names the same few auth events
	// a thousand times.
	r.meta = make(map[string]*storage.Event, len(evs)*2)
	var ids []string
	// Rows remembered need no query: a live message leaves only itself.
	add := func(list ...string) {
		for _, id := range list {
			if _, ok := r.meta[id]; ok {
				continue
			}
			row := r.rows[id]
			r.meta[id] = row // nil: known missing, unless the query finds it
			if row == nil {
				ids = append(ids, id)
			}
		}
	}
	for _, re := range evs {
		add(re.pdu.EventID())
		add(re.pdu.PrevEventIDs()...)
		add(re.pdu.AuthEventIDs()...)
		add(re.stateBefore...)
	}
	if c := r.createEventID(); c != "" {
		add(c)
	}
	rows, err := storage.EventMetasByIDTx(tx, ids)
	if err != nil {
		r.meta = nil
		return err
	}
	for _, row := range rows {
		r.meta[row.ID] = r.remember(row)
	}
	return nil
}

// eventMeta is an event's row without JSON, from the batch's prefetched
// rows when there are some.
func (r *room) eventMeta(tx *storage.Tx, id string) (*storage.Event, error) {
	if m, ok := r.meta[id]; ok {
		if m == nil {
			return nil, storage.ErrNotFound
		}
		return m, nil
	}
	return storage.EventMetaByIDTx(tx, id)
}

// eventsByID loads events' rows (without JSON) by ID inside a write,
// returning the IDs missing.
func (r *room) eventsByID(tx *storage.Tx, ids []string) ([]*storage.Event, []string, error) {
	var rows []*storage.Event
	var missing []string
	for _, id := range ids {
		row, err := r.eventMeta(tx, id)
		if errors.Is(err, storage.ErrNotFound) {
			missing = append(missing, id)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		rows = append(rows, row)
	}
	return rows, missing, nil
}

// stateAfterRow is the state after a stored, non-outlier event.
func (r *room) stateAfterRow(tx *storage.Tx, row *storage.Event) (*snapshot, error) {
	s, err := r.rs.loadSnapshot(tx, row.SnapshotNID)
	if err != nil {
		return nil, err
	}
	if row.KeyNID != 0 && !row.Rejected {
		after := make(stateMap, len(s.state)+1)
		for k, v := range s.state {
			after[k] = v
		}
		after[stateKeyNIDs{row.TypeNID, row.KeyNID}] = row.NID
		// base stays s: storing this state rewrites one block of it.
		return &snapshot{nid: 0, blocks: s.blocks, state: after}, nil
	}
	return s, nil
}

// stateBefore works out (and stores) the state before a remote event: the
// state after its prev event, or the resolution of the states after each
// of its prev events.
func (r *room) stateBefore(tx *storage.Tx, ev gomatrixserverlib.PDU, given []string, res *InputResult) (*snapshot, error) {
	if given != nil {
		rows, missing, err := r.eventsByID(tx, given)
		if err != nil {
			return nil, err
		}
		if len(missing) > 0 {
			res.Err = &MissingEventsError{IDs: missing}
			return nil, nil
		}
		state := stateMap{}
		for _, row := range rows {
			if row.KeyNID != 0 && !row.Rejected {
				state[stateKeyNIDs{row.TypeNID, row.KeyNID}] = row.NID
			}
		}
		return r.rs.storeState(tx, r.row.NID, nil, state)
	}
	prevRows, missing, err := r.eventsByID(tx, ev.PrevEventIDs())
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		res.Err = &MissingEventsError{IDs: missing}
		return nil, nil
	}
	var noState []string
	for _, p := range prevRows {
		if p.SnapshotNID == 0 {
			noState = append(noState, p.ID)
		}
	}
	if len(noState) > 0 {
		res.Err = &MissingEventsError{IDs: noState, State: true}
		return nil, nil
	}
	if len(prevRows) == 0 { // the create event
		return r.rs.storeState(tx, r.row.NID, nil, stateMap{})
	}
	sets := make([]*snapshot, len(prevRows))
	for i, p := range prevRows {
		if sets[i], err = r.stateAfterRow(tx, p); err != nil {
			return nil, err
		}
	}
	state := sets[0].state
	if len(sets) > 1 {
		if state, err = r.resolve(tx, sets); err != nil {
			return nil, err
		}
	}
	return r.rs.storeState(tx, r.row.NID, sets[0], state)
}

// storeBackfilled stores history older than the room's timeline (or takes
// up an outlier into it) at a negative stream position: /messages pages
// through it after the stream, and /sync, which reads positions above its
// token, never serves it as new. Positions are handed out in blocks below
// the lowest in use, in input order, so a batch given oldest first pages
// back newest first. Its stream row is written with the batch's others,
// at the batch's end (inputRemote).
func (r *room) storeBackfilled(tx *storage.Tx, ev gomatrixserverlib.PDU, old *storage.Event, snapshotNID int64) error {
	pos := r.backfillPos
	r.backfillPos++
	nid := int64(0)
	if old != nil {
		nid = old.NID
		if err := storage.SetSnapshot(tx, nid, snapshotNID); err != nil {
			return err
		}
		if err := storage.SetStreamPos(tx, nid, pos); err != nil {
			return err
		}
		if m := r.meta[old.ID]; m != nil {
			m.SnapshotNID, m.StreamPos = snapshotNID, pos
		}
	} else {
		row, err := r.insertAt(tx, ev, snapshotNID, false, pos)
		if err != nil {
			return err
		}
		nid = row.NID
	}
	r.history = append(r.history, storage.HistoryRow{Pos: pos, EventNID: nid})
	return nil
}

// storeRejected keeps a rejected event so it is never fetched or accepted
// again; it is never served, never state, never a prev event of ours.
func (r *room) storeRejected(tx *storage.Tx, ev gomatrixserverlib.PDU, snapshotNID int64, res *InputResult, reason string) error {
	res.Err = &RejectedError{Reason: reason}
	log.Info("rejected event", "room", r.row.ID, "event", ev.EventID(), "reason", reason)
	_, err := r.insert(tx, ev, snapshotNID, true)
	return err
}

// insert writes an event row (not the stream, not the state).
func (r *room) insert(tx *storage.Tx, ev gomatrixserverlib.PDU, snapshotNID int64, rejected bool) (int64, error) {
	row, err := r.insertAt(tx, ev, snapshotNID, rejected, 0)
	if err != nil {
		return 0, err
	}
	return row.NID, nil
}

// insertAt writes an event row with its stream position already known,
// and returns it as remembered (without JSON).
func (r *room) insertAt(tx *storage.Tx, ev gomatrixserverlib.PDU, snapshotNID int64, rejected bool, pos int64) (*storage.Event, error) {
	typeNID, err := r.rs.nids.typeNID(tx, r.pending, ev.Type())
	if err != nil {
		return nil, err
	}
	var keyNID int64
	if sk := ev.StateKey(); sk != nil {
		if keyNID, err = r.rs.nids.keyNID(tx, r.pending, *sk); err != nil {
			return nil, err
		}
	}
	row := &storage.Event{
		RoomNID: r.row.NID, ID: ev.EventID(), TypeNID: typeNID, KeyNID: keyNID, Depth: ev.Depth(),
		SnapshotNID: snapshotNID, Rejected: rejected, StreamPos: pos, Redacted: ev.Redacted(), JSON: ev.JSON(),
	}
	if _, err := storage.InsertEvent(tx, row); err != nil {
		return nil, err
	}
	meta := r.remember(row)
	if r.meta != nil {
		r.meta[row.ID] = meta
	}
	return meta, nil
}

// maxRows bounds a room's remembered event rows.
const maxRows = 512

// remember keeps (a copy without JSON of) an event's row, stored or read
// in the write running, and returns the copy. Until the write commits
// the row may yet be undone: whatever undoes it forgets every row.
func (r *room) remember(row *storage.Event) *storage.Event {
	if len(r.rows) >= maxRows || r.rows == nil {
		r.rows = make(map[string]*storage.Event, maxRows)
	}
	meta := *row
	meta.JSON = nil
	r.rows[row.ID] = &meta
	return &meta
}

// advance makes a stored event a forward extremity, recomputes the
// room's current state and appends the event to the stream at pos.
func (r *room) advance(tx *storage.Tx, ev gomatrixserverlib.PDU, nid, pos int64, before *snapshot) (*Output, error) {
	prevs := map[string]bool{}
	for _, p := range ev.PrevEventIDs() {
		prevs[p] = true
	}
	extension := true
	var exts []int64
	var extIDs []string
	for i, id := range r.extIDs {
		if prevs[id] {
			continue
		}
		extension = false
		exts = append(exts, r.row.Extremities[i])
		extIDs = append(extIDs, id)
	}
	exts = append(exts, nid)
	extIDs = append(extIDs, ev.EventID())

	after := before.state
	if ev.StateKey() != nil {
		after = make(stateMap, len(before.state)+1)
		for k, v := range before.state {
			after[k] = v
		}
		row, err := storage.EventsByNIDTx(tx, []int64{nid})
		if err != nil || len(row) != 1 {
			return nil, fmt.Errorf("reload event %s: %w", ev.EventID(), err)
		}
		after[stateKeyNIDs{row[0].TypeNID, row[0].KeyNID}] = nid
	}
	if !extension {
		sets := []*snapshot{{state: after}}
		rows, err := storage.EventsByNIDTx(tx, exts[:len(exts)-1])
		if err != nil {
			return nil, err
		}
		for _, row := range rows {
			s, err := r.stateAfterRow(tx, row)
			if err != nil {
				return nil, err
			}
			sets = append(sets, s)
		}
		if after, err = r.resolve(tx, sets); err != nil {
			return nil, err
		}
	}
	if len(exts) > maxPrevEvents*5 {
		// Keep the newest: an old fork far behind adds nothing but size.
		exts, extIDs = exts[len(exts)-maxPrevEvents*5:], extIDs[len(extIDs)-maxPrevEvents*5:]
	}

	out := &Output{RoomID: r.row.ID, Event: ev, RoomNID: r.row.NID, EventNID: nid, Pos: pos}
	adds, removes, added, err := r.setCurrent(tx, after, out)
	if err != nil {
		return nil, err
	}
	if err := storage.AppendStreamAt(tx, pos, r.row.NID, nid, adds, removes); err != nil {
		return nil, err
	}
	for _, e := range added {
		if err := r.recordMembership(tx, e, out.Pos); err != nil {
			return nil, err
		}
	}
	if ev.Type() == spec.MRoomRedaction {
		if err := r.redact(tx, ev); err != nil {
			return nil, err
		}
	}
	r.row.Extremities, r.extIDs = exts, extIDs
	r.row.Depth = max(r.row.Depth, ev.Depth())
	return out, nil
}

// jump sets the room's current state to state with a stream row of its
// own that carries no event.
func (r *room) jump(tx *storage.Tx, before *snapshot) error {
	var out Output
	adds, removes, added, err := r.setCurrent(tx, before.state, &out)
	if err != nil || len(adds)+len(removes) == 0 {
		return err
	}
	pos, err := storage.AppendStream(tx, r.row.NID, 0, adds, removes)
	if err != nil {
		return err
	}
	for _, e := range added {
		if err := r.recordMembership(tx, e, pos); err != nil {
			return err
		}
	}
	return nil
}

// setCurrent replaces the room's current state with state, recording the
// difference in out and in the current_state table.
func (r *room) setCurrent(tx *storage.Tx, state stateMap, out *Output) (adds, removes []int64, added []*entry, err error) {
	cur := make(stateMap, len(r.st.state))
	for _, e := range r.st.state {
		cur[stateKeyNIDs{e.typeNID, e.keyNID}] = e.eventNID
	}
	var set, del []storage.StateEntry
	for k, v := range state {
		if old, ok := cur[k]; !ok || old != v {
			adds = append(adds, v)
			set = append(set, storage.StateEntry{TypeNID: k.typeNID, KeyNID: k.keyNID, EventNID: v})
			if ok {
				removes = append(removes, old)
			}
		}
	}
	for k, old := range cur {
		if _, ok := state[k]; !ok {
			removes = append(removes, old)
			del = append(del, storage.StateEntry{TypeNID: k.typeNID, KeyNID: k.keyNID, EventNID: old})
		}
	}
	if len(adds) == 0 && len(removes) == 0 {
		return nil, nil, nil, nil
	}
	base := &snapshot{nid: r.st.snapshot, blocks: r.st.blocks, state: cur}
	if r.st.snapshot == 0 {
		base = nil
	}
	snap, err := r.rs.storeState(tx, r.row.NID, base, state)
	if err != nil {
		return nil, nil, nil, err
	}
	r.st.snapshot, r.st.blocks = snap.nid, snap.blocks
	r.row.SnapshotNID = snap.nid

	rows, err := storage.EventsByNIDTx(tx, append(append([]int64{}, adds...), removes...))
	if err != nil {
		return nil, nil, nil, err
	}
	byNID := map[int64]*storage.Event{}
	for _, row := range rows {
		byNID[row.NID] = row
	}
	for _, nid := range removes {
		row := byNID[nid]
		out.Removes = append(out.Removes, row.ID)
		if _, replaced := state[stateKeyNIDs{row.TypeNID, row.KeyNID}]; !replaced {
			p, err := r.rs.parse(r.row.Version, row.ID, row.JSON, row.Redacted)
			if err != nil {
				return nil, nil, nil, err
			}
			r.st.remove(tuple{EventType: p.Type(), StateKey: *p.StateKey()})
		}
	}
	for _, nid := range adds {
		row := byNID[nid]
		out.Adds = append(out.Adds, row.ID)
		p, err := r.rs.parse(r.row.Version, row.ID, row.JSON, row.Redacted)
		if err != nil {
			return nil, nil, nil, err
		}
		e := &entry{typeNID: row.TypeNID, keyNID: row.KeyNID, eventNID: nid, pdu: p}
		r.st.put(tuple{EventType: p.Type(), StateKey: *p.StateKey()}, e)
		added = append(added, e)
	}
	return adds, removes, added, storage.SetCurrentState(tx, r.row.NID, set, del)
}

// recordMembership updates the membership table for an added state event.
func (r *room) recordMembership(tx *storage.Tx, e *entry, pos int64) error {
	if e.pdu.Type() != spec.MRoomMember {
		return nil
	}
	m, err := e.pdu.Membership()
	if err != nil {
		return err
	}
	return storage.SetMembership(tx, *e.pdu.StateKey(), r.row.NID, m, e.eventNID, pos)
}

// parseLogged parses an input log entry: verified before it was logged.
func parseLogged(version string, js []byte) (gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		return nil, err
	}
	return verImpl.NewEventFromTrustedJSON(js, false)
}
