package roomserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/sjson"

	"hearth/node/storage"
)

// maxPrevEvents caps prev_events so a room with many forward extremities
// still produces events of bounded size.
const maxPrevEvents = 20

// maxBatch bounds how many queued requests of one room share a commit.
const maxBatch = 64

type request struct {
	ctx    context.Context
	local  []NewEvent
	remote []*remoteEvent
	// read, when set, runs in the worker against its in-memory state and
	// writes nothing.
	read func(*room) error
	done chan result

	// Set by prepare for a request of one local message: the event,
	// built and authorised outside the write; or the answer, when it
	// needs no write (refused, or a repeated transaction).
	built gomatrixserverlib.PDU
	early *result
	// allowed: the auth verdict on built, to remember (see buildAllowed)
	allowed string
	// txnUnseen: the transaction ID was not looked up before building;
	// the write looks it up (see sortOut).
	txnUnseen bool
}

type result struct {
	ids []string
	err error
}

// room is one room's worker. Everything but queue, turn and idle is owned
// by whoever holds turn (and by CreateRoom before the worker starts), and
// lent to the storage writer while a batch's write runs.
type room struct {
	rs    *Roomserver
	queue chan *request
	// turn is held by whoever works on the room: the worker goroutine
	// from taking a request until it is idle again, or a caller running
	// its request itself (see call).
	turn sync.Mutex
	// idle: nobody holds turn, nothing is in flight (read by Input, which
	// logs events only for rooms that are not)
	idle atomic.Bool
	// contended: the worker's last batch held more than one request, so
	// requests come faster than they are handled, and are best handled
	// in batches by the worker (see call)
	contended atomic.Bool

	loaded bool
	row    storage.Room
	ver    gomatrixserverlib.IRoomVersion
	st     roomState
	// extremity IDs, parallel to row.Extremities
	extIDs []string
	// NIDs assigned by the batch being written
	pending pendingNIDs
	// the next negative stream position for backfilled history
	backfillPos int64
	// rows (without JSON) of the events a batch of remote input refers
	// to; nil outside such a batch. A nil entry: known to be missing.
	meta map[string]*storage.Event
	// rows (without JSON) of events this room's writes stored or looked
	// up lately, kept across batches: a live message names the same few
	// as the one before it (that one, as its prev event; the create,
	// power levels and sender's member events, as its auth events), and
	// in the browser each query costs a third of a millisecond. A row
	// changes only through this worker, which keeps it current; a write
	// that fails drops them all (see remember).
	rows map[string]*storage.Event
	// the stream rows of the history a batch of remote input backfilled,
	// written together at its end
	history []storage.HistoryRow

	// What prepare builds on: the extremities and depth the room will
	// have once the batch in flight commits. Worker-only.
	head struct {
		ids   []string
		depth int64
	}
	// requests with a transaction ID prepared and not yet known to be
	// committed
	txns map[txnKey]*request
	// auth verdicts remembered (see plainAuthKey): a worker-only cache,
	// which the events of a group built side by side only read
	allowed map[string]struct{}
}

type txnKey struct{ device, id string }

// flight is a batch whose write is running. While it holds prepared
// messages only (pure), its write changes nothing that preparing the next
// batch reads, so the worker builds the next batch's events meanwhile:
// signing and hashing on one core, SQLite on the other.
type flight struct {
	pure bool
	txns []txnKey
	err  error // set before done is closed
	done chan struct{}
}

func (r *room) enqueue(ctx context.Context, req *request) (err error) {
	defer func() {
		// A send on the queue closed by Close panics; report it as closed.
		if recover() != nil {
			err = errClosed
		}
	}()
	select {
	case r.queue <- req:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// call runs req and returns its result: on the caller's goroutine when
// the room is idle and was not busy just before, else through the
// worker's queue. A lone request (a client's message in a quiet room)
// then takes no hand-off between goroutines, which on two cores costs
// more than building the event; requests that come together are still
// batched, built while the one before commits, and committed together.
func (r *room) call(ctx context.Context, req *request) (result, error) {
	if r.idle.Load() && !r.contended.Load() && r.turn.TryLock() {
		if len(r.queue) == 0 {
			r.idle.Store(false)
			if fl := r.process([]*request{req}, nil, true); fl != nil {
				r.land(fl)
			}
			r.contended.Store(len(r.queue) > 0)
			r.idle.Store(true)
			r.turn.Unlock()
			return <-req.done, nil
		}
		r.turn.Unlock() // the worker has requests before this one
	}
	if err := r.enqueue(ctx, req); err != nil {
		return result{}, err
	}
	select {
	case res := <-req.done:
		return res, nil
	case <-ctx.Done():
		return result{}, ctx.Err()
	}
}

func (r *room) run() {
	defer r.rs.wg.Done()
	r.turn.Lock()
	var fl *flight
	defer func() {
		if fl != nil {
			<-fl.done
		}
		// turn stays held: a closed room runs nothing more.
		r.idle.Store(false)
	}()
	for {
		var req *request
		var ok bool
		if fl == nil {
			r.idle.Store(true)
			r.turn.Unlock()
			req, ok = <-r.queue
			// Not idle from here: a caller must not run its request
			// ahead of this one, taken first.
			r.idle.Store(false)
			r.turn.Lock()
			r.idle.Store(false) // again: a caller that ran meanwhile set it
		} else {
			select {
			case req, ok = <-r.queue:
			case <-fl.done:
				r.land(fl)
				fl = nil
				continue
			}
		}
		if !ok {
			return
		}
		batch := append(make([]*request, 0, 8), req)
	drain:
		for len(batch) < maxBatch {
			select {
			case req, ok := <-r.queue:
				if !ok {
					break drain
				}
				batch = append(batch, req)
			default:
				break drain
			}
		}
		r.contended.Store(len(batch) > 1)
		fl = r.process(batch, fl, false)
	}
}

// process handles a batch, given the flight before it (nil if none), and
// returns the batch's own flight (nil if it writes nothing). inline: the
// caller of call runs it, and its write runs on this goroutine, landed
// when process returns. Each request is atomic on its own: a refused
// request is undone without touching its neighbours.
func (r *room) process(batch []*request, fl *flight, inline bool) *flight {
	reads := slices.ContainsFunc(batch, func(req *request) bool { return req.read != nil })
	if fl != nil && (!fl.pure || reads) {
		r.wait(fl)
		fl = nil
	}
	if err := r.ensureLoaded(); err != nil {
		for _, req := range batch {
			req.done <- result{err: err}
		}
		return fl
	}
	if !slices.ContainsFunc(batch, func(req *request) bool { return req.read == nil }) {
		for _, req := range batch {
			req.done <- result{err: req.read(r)}
		}
		return nil
	}
	r.prepare(batch, fl != nil, inline)
	if fl != nil && !r.wait(fl) {
		// Prepared on events that were not committed: again, on what was.
		for _, req := range batch {
			req.built, req.early = nil, nil
		}
		if err := r.ensureLoaded(); err != nil {
			for _, req := range batch {
				req.done <- result{err: err}
			}
			return nil
		}
		r.prepare(batch, false, false)
	}
	return r.submit(batch, inline)
}

func (r *room) ensureLoaded() error {
	if r.loaded {
		return nil
	}
	if err := r.load(); err != nil {
		return fmt.Errorf("roomserver: load %s: %w", r.row.ID, err)
	}
	return nil
}

// wait waits for a flight to land and tells whether it committed.
func (r *room) wait(fl *flight) bool {
	<-fl.done
	r.land(fl)
	return fl.err == nil
}

// land takes note of a finished flight. After a failed one, nothing the
// worker believed is trusted: the room is reloaded before its next batch.
func (r *room) land(fl *flight) {
	if fl.err != nil {
		r.loaded = false
		clear(r.txns)
		return
	}
	for _, k := range fl.txns {
		delete(r.txns, k)
	}
}

// preparable tells a request prepare can build: one local event that
// changes no state, so the events after it need nothing of its write.
func preparable(req *request) bool {
	return req.read == nil && req.remote == nil && len(req.local) == 1 &&
		req.local[0].StateKey == nil && req.local[0].Type != spec.MRoomRedaction
}

// prepare builds, outside the write, the batch's leading requests that
// preparable allows; afterFlight: on the tip the flight in progress
// leaves, else on the room's. Up to one event per core is built at once,
// as siblings on the same tip: the chain of event IDs would otherwise
// keep the hashing and signing on one core.
func (r *room) prepare(batch []*request, afterFlight, inline bool) {
	if !afterFlight {
		r.head.ids, r.head.depth = slices.Clone(r.extIDs), r.row.Depth
	}
	build, repeats := r.sortOut(batch, inline)
	width := min(max(runtime.GOMAXPROCS(0), 1), maxSiblings)
	for len(build) > 0 {
		group := siblings(build, width)
		build = build[len(group):]
		r.buildGroup(group)
	}
	for req, orig := range repeats {
		if orig.built != nil {
			req.early = &result{ids: []string{orig.built.EventID()}}
		} else {
			req.early = orig.early
		}
	}
}

// sortOut takes the batch's leading preparable requests and returns those
// to build, answering the others early; a repeat of a transaction still
// being prepared or committed is answered as the request it repeats is,
// once that is built (repeats maps it to that request). A transaction
// committed earlier is looked up now, before anything is built on its
// event; but for an inline batch, which nothing else builds on, the write
// looks it up: on the writer's warm connection, not a reader's that
// every commit makes read its pages afresh.
func (r *room) sortOut(batch []*request, inline bool) (build []*request, repeats map[*request]*request) {
	if r.txns == nil {
		r.txns = map[txnKey]*request{}
	}
	for _, req := range batch {
		if !preparable(req) {
			break
		}
		if err := req.ctx.Err(); err != nil {
			req.early = &result{err: err}
			continue
		}
		ne := req.local[0]
		if ne.TxnID != "" {
			key := txnKey{ne.TxnDevice, ne.TxnID}
			if orig := r.txns[key]; orig != nil {
				if repeats == nil {
					repeats = map[*request]*request{}
				}
				repeats[req] = orig
				continue
			}
			req.txnUnseen = inline
			if !inline {
				id, err := r.rs.db.TxnEventCommitted(req.ctx, ne.TxnDevice, r.row.NID, ne.TxnID)
				switch {
				case err == nil:
					req.early = &result{ids: []string{id}}
					continue
				case !errors.Is(err, storage.ErrNotFound):
					req.early = &result{err: fmt.Errorf("roomserver: %s: %w", r.row.ID, err)}
					continue
				}
			}
			r.txns[key] = req
		}
		build = append(build, req)
	}
	return build, repeats
}

// buildGroup builds a group's events at once on the head, and makes them
// the head the next group builds on.
func (r *room) buildGroup(group []*request) {
	var wg sync.WaitGroup
	for _, req := range group[1:] {
		wg.Go(func() { r.prepareOne(req) })
	}
	r.prepareOne(group[0])
	wg.Wait()
	var ids []string
	for _, req := range group {
		if req.allowed != "" {
			r.rememberAllowed(req.allowed)
		}
		if req.built != nil {
			ids = append(ids, req.built.EventID())
			continue
		}
		// Refused: a retry of its transaction is tried afresh.
		if ne := req.local[0]; ne.TxnID != "" {
			delete(r.txns, txnKey{ne.TxnDevice, ne.TxnID})
		}
	}
	if len(ids) > 0 {
		r.head.ids, r.head.depth = ids, r.head.depth+1
	}
}

// maxSiblings bounds how many events prepare builds on one tip.
const maxSiblings = 8

// siblings is how many of the requests, up to width, prepare builds on
// one tip: a request that would make the same event as one before it in
// the group (same sender, type and content, in the same millisecond)
// starts the next group, on a different tip.
func siblings(reqs []*request, width int) []*request {
	n := 1
	for ; n < min(width, len(reqs)); n++ {
		a := reqs[n].local[0]
		if slices.ContainsFunc(reqs[:n], func(b *request) bool {
			return a.Sender == b.local[0].Sender && a.Type == b.local[0].Type && bytes.Equal(a.Content, b.local[0].Content)
		}) {
			break
		}
	}
	return reqs[:n]
}

// prepareOne builds one request's event on the head, or its refusal. It
// runs beside others of its group, so the verdict to remember waits in
// req for buildGroup.
func (r *room) prepareOne(req *request) {
	ev, allowed, err := r.buildAllowed(req.local[0], r.head.ids, r.head.depth)
	if err != nil {
		req.early = &result{err: err}
		return
	}
	req.built, req.allowed = ev, allowed
}

// submit starts the batch's write and returns its flight, or answers the
// batch at once when it has nothing to write. inline: the write runs on
// this goroutine and is done when submit returns.
func (r *room) submit(batch []*request, inline bool) *flight {
	fl := &flight{pure: true, done: make(chan struct{})}
	writes := false
	for _, req := range batch {
		switch {
		case req.built != nil:
			writes = true
			if id := req.local[0].TxnID; id != "" {
				fl.txns = append(fl.txns, txnKey{req.local[0].TxnDevice, id})
			}
		case req.early == nil:
			writes, fl.pure = true, false
		}
	}
	if !writes {
		for _, req := range batch {
			req.done <- *req.early
		}
		return nil
	}
	results := make([]result, len(batch))
	var outs []Output
	write := func(tx *storage.Tx) error {
		outs = outs[:0]
		first := true
		for i, req := range batch {
			switch {
			case req.early != nil:
				results[i] = *req.early
			case req.built != nil:
				if id, seen, err := r.txnSeen(tx, req); err != nil {
					return err
				} else if seen {
					results[i] = result{ids: []string{id}}
					continue
				}
				o, err := r.commitPrepared(tx, req, first)
				first = false
				if err != nil {
					return err
				}
				results[i] = result{ids: []string{req.built.EventID()}}
				outs = append(outs, o)
			case req.ctx.Err() != nil:
				results[i] = result{err: req.ctx.Err()}
			case req.read != nil:
				results[i] = result{err: req.read(r)}
			case req.remote != nil:
				if err := r.inputRemote(tx, req.remote, &outs); err != nil {
					return err
				}
			default:
				ids, o, err := r.apply(tx, req)
				if err != nil {
					if isRefusal(err) {
						results[i] = result{err: err}
						continue
					}
					return err
				}
				results[i] = result{ids: ids}
				outs = append(outs, o...)
			}
		}
		return storage.UpdateRoom(tx, &r.row)
	}
	land := func() {
		err := r.rs.db.Write(context.Background(), write)
		r.st.undo = r.st.undo[:0]
		if err != nil {
			// Nothing was committed. NIDs of events the batch inserted
			// will be handed out again; the worker reloads the room.
			clear(r.pending)
			r.rows = nil
			r.rs.pdus.clear()
			r.rs.blocks.clear()
			for i := range results {
				if results[i].err == nil {
					results[i] = result{err: fmt.Errorf("roomserver: %s: %w", r.row.ID, err)}
				}
			}
		} else {
			r.rs.nids.commit(r.pending)
			if len(outs) > 0 {
				r.rs.cfg.OnOutput(outs)
			}
		}
		fl.err = err
		for i, req := range batch {
			req.done <- results[i]
		}
		close(fl.done)
	}
	if inline {
		land()
	} else {
		go land()
	}
	return fl
}

// inputRemote stores a request's events from other servers.
func (r *room) inputRemote(tx *storage.Tx, evs []*remoteEvent, outs *[]Output) error {
	if err := r.reserveBackfillPositions(tx, evs); err != nil {
		return err
	}
	if err := r.prefetchMeta(tx, evs); err != nil {
		return err
	}
	defer func() { r.meta, r.history = nil, r.history[:0] }()
	for _, re := range evs {
		o, err := r.input(tx, re)
		if err != nil {
			return err
		}
		if o != nil {
			*outs = append(*outs, *o)
		}
		if re.seq != 0 {
			if err := storage.DeleteInputLog(tx, re.seq); err != nil {
				return err
			}
		}
	}
	return storage.InsertHistory(tx, r.row.NID, r.history)
}

// reserveBackfillPositions sets aside a block of negative stream positions
// below every one in use, one for each backfilled event of a request.
func (r *room) reserveBackfillPositions(tx *storage.Tx, evs []*remoteEvent) error {
	n := int64(0)
	for _, re := range evs {
		if re.backfilled {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	lowest, err := storage.LowestStreamPos(tx)
	if err != nil {
		return err
	}
	r.backfillPos = min(lowest, 0) - n
	return nil
}

// isRefusal tells errors about one request (answered to its caller) from
// storage failures (which fail the whole batch).
func isRefusal(err error) bool {
	var fe *ForbiddenError
	var be *BadEventError
	return errors.As(err, &fe) || errors.As(err, &be) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrEventNotFound)
}

// apply runs one request under a savepoint, undoing it whole on refusal.
func (r *room) apply(tx *storage.Tx, req *request) ([]string, []Output, error) {
	if len(req.local) == 1 {
		// One event is refused before it writes anything (a failure after
		// that fails the whole batch): no savepoint needed.
		o, id, err := r.send(tx, req.local[0])
		switch {
		case err != nil:
			return nil, nil, err
		case o.Event == nil: // a repeated transaction
			return []string{id}, nil, nil
		}
		return []string{id}, []Output{o}, nil
	}
	if _, err := tx.Exec(`SAVEPOINT req`); err != nil {
		return nil, nil, err
	}
	saved := r.checkpoint()
	var ids []string
	var outs []Output
	var err error
	for _, ne := range req.local {
		var o Output
		var id string
		o, id, err = r.send(tx, ne)
		if err != nil {
			break
		}
		ids = append(ids, id)
		if o.Event != nil {
			outs = append(outs, o)
		}
	}
	if err != nil {
		r.restore(saved)
		// NIDs assigned under the savepoint go with it, and rows.
		clear(r.pending)
		r.rows = nil
		if _, rerr := tx.Exec(`ROLLBACK TO req`); rerr != nil {
			return nil, nil, rerr
		}
	}
	if _, rerr := tx.Exec(`RELEASE req`); rerr != nil {
		return nil, nil, rerr
	}
	return ids, outs, err
}

// checkpoint is enough to undo a request: the small fields by value, the
// state map through its undo log.
type checkpoint struct {
	row      storage.Room
	extIDs   []string
	snapshot int64
	blocks   [numBlocks]int64
	undo     int
}

func (r *room) checkpoint() checkpoint {
	return checkpoint{row: r.row, extIDs: r.extIDs, snapshot: r.st.snapshot, blocks: r.st.blocks, undo: len(r.st.undo)}
}

func (r *room) restore(c checkpoint) {
	r.row, r.extIDs, r.st.snapshot, r.st.blocks = c.row, c.extIDs, c.snapshot, c.blocks
	r.st.rollback(c.undo)
}

// load reads the room's current state into memory.
func (r *room) load() error {
	ctx := context.Background()
	row, err := r.rs.db.RoomByID(ctx, r.row.ID)
	if err != nil {
		return err
	}
	r.row = *row
	if r.ver, err = gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(row.Version)); err != nil {
		return err
	}
	st := roomState{snapshot: row.SnapshotNID, state: map[tuple]*entry{}}
	var blocks []int64
	if row.SnapshotNID != 0 { // 0: a room heard of, with no state yet
		if blocks, err = r.rs.db.SnapshotBlocks(ctx, row.SnapshotNID); err != nil {
			return fmt.Errorf("snapshot %d: %w", row.SnapshotNID, err)
		}
	}
	copy(st.blocks[:], blocks)
	var nids []int64
	entries := map[int64]storage.StateEntry{}
	for _, b := range blocks {
		if b == 0 {
			continue
		}
		es, err := r.rs.db.StateBlock(ctx, b)
		if err != nil {
			return err
		}
		for _, e := range es {
			nids = append(nids, e.EventNID)
			entries[e.EventNID] = e
		}
	}
	evs, err := r.rs.db.EventsByNID(ctx, nids)
	if err != nil {
		return err
	}
	for _, ev := range evs {
		pdu, err := r.rs.parse(row.Version, ev.ID, ev.JSON, ev.Redacted)
		if err != nil {
			return fmt.Errorf("event %s: %w", ev.ID, err)
		}
		e := entries[ev.NID]
		st.state[tuple{EventType: pdu.Type(), StateKey: *pdu.StateKey()}] = &entry{typeNID: e.TypeNID, keyNID: e.KeyNID, eventNID: ev.NID, pdu: pdu}
	}
	r.st = st
	exts, err := r.rs.db.EventsByNID(ctx, row.Extremities)
	if err != nil {
		return err
	}
	r.extIDs = r.extIDs[:0]
	r.row.Extremities = r.row.Extremities[:0]
	for _, e := range exts {
		r.extIDs = append(r.extIDs, e.ID)
		r.row.Extremities = append(r.row.Extremities, e.NID)
	}
	r.loaded = true
	return nil
}

// send builds and stores one local event. A repeated transaction returns
// the first event's ID and no output.
func (r *room) send(tx *storage.Tx, ne NewEvent) (Output, string, error) {
	if ne.TxnID != "" {
		id, err := storage.TxnEvent(tx, ne.TxnDevice, r.row.NID, ne.TxnID)
		if err == nil {
			return Output{}, id, nil
		}
		if !errors.Is(err, storage.ErrNotFound) {
			return Output{}, "", err
		}
	}
	ev, allowed, err := r.buildAllowed(ne, r.extIDs, r.row.Depth)
	if err != nil {
		return Output{}, "", err
	}
	if allowed != "" {
		r.rememberAllowed(allowed)
	}
	out, err := r.storeLocal(tx, ev, ne)
	return out, ev.EventID(), err
}

// commitPrepared stores an event prepare built. The batch's first was
// built on the tip the write before this one left, which must be the
// room's tip now; the others on it or on each other.
func (r *room) commitPrepared(tx *storage.Tx, req *request, first bool) (Output, error) {
	if first && !slices.Equal(req.built.PrevEventIDs(), prevEvents(r.extIDs)) {
		return Output{}, fmt.Errorf("roomserver: %s: event %s was prepared on a stale tip", r.row.ID, req.built.EventID())
	}
	return r.storeLocal(tx, req.built, req.local[0])
}

// txnSeen looks up, for a request whose transaction sortOut left unseen,
// the event an earlier commit of it made.
func (r *room) txnSeen(tx *storage.Tx, req *request) (string, bool, error) {
	if !req.txnUnseen {
		return "", false, nil
	}
	ne := req.local[0]
	id, err := storage.TxnEvent(tx, ne.TxnDevice, r.row.NID, ne.TxnID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", false, nil
	}
	return id, err == nil, err
}

// storeLocal stores a local event and the transaction that sent it.
func (r *room) storeLocal(tx *storage.Tx, ev gomatrixserverlib.PDU, ne NewEvent) (Output, error) {
	out, err := r.store(tx, ev)
	if err != nil {
		return Output{}, err
	}
	if ne.TxnID != "" {
		nid := r.row.Extremities[len(r.row.Extremities)-1] // extend puts the new event last
		if err := storage.InsertTxn(tx, ne.TxnDevice, r.row.NID, ne.TxnID, nid); err != nil {
			return Output{}, err
		}
	}
	return out, nil
}

// buildAllowed builds a local event on prev and checks it against the
// current state. The auth events the event names are the ones the auth
// rules read from that state, so a verdict remembered for them (see
// plainAuthKey) stands; a new one to remember is returned as allowed.
func (r *room) buildAllowed(ne NewEvent, prev []string, depth int64) (ev gomatrixserverlib.PDU, allowed string, err error) {
	if ev, err = r.build(ne, prev, depth, time.Now()); err != nil {
		return nil, "", err
	}
	key, plain := plainAuthKey(ev, ev.AuthEventIDs())
	if _, seen := r.allowed[key]; plain && seen {
		return ev, "", nil
	}
	if err := gomatrixserverlib.Allowed(ev, &r.st, userIDForSender); err != nil {
		return nil, "", &ForbiddenError{Reason: err.Error()}
	}
	if plain {
		allowed = key
	}
	return ev, allowed, nil
}

// build makes a signed event on top of prev, the room's forward
// extremities at depth, stamped now.
func (r *room) build(ne NewEvent, prev []string, depth int64, now time.Time) (gomatrixserverlib.PDU, error) {
	eb, err := r.builder(ne, prev, depth)
	if err != nil {
		return nil, err
	}
	ev, err := SignEvent(r.ver, eb, now, r.rs.cfg.ServerName, r.rs.cfg.KeyID, r.rs.cfg.PrivateKey)
	var ve gomatrixserverlib.EventValidationError
	if errors.As(err, &ve) && ve.Code == gomatrixserverlib.EventValidationTooLarge {
		return nil, ErrTooLarge
	}
	if err != nil {
		return nil, &BadEventError{Reason: err.Error()}
	}
	if len(ev.JSON()) > MaxEventSize {
		return nil, ErrTooLarge
	}
	ev.EventID() // computed here, outside the write, and remembered
	return ev, nil
}

// prevEvents is what an event on extremities refers to: the newest of
// them, at most maxPrevEvents.
func prevEvents(extremities []string) []string {
	if len(extremities) > maxPrevEvents {
		extremities = extremities[len(extremities)-maxPrevEvents:]
	}
	return extremities
}

// builder prepares an event on top of prev, the room's forward
// extremities at depth, with its auth events from the current state.
func (r *room) builder(ne NewEvent, prev []string, depth int64) (*gomatrixserverlib.EventBuilder, error) {
	if _, err := spec.NewUserID(ne.Sender, true); err != nil {
		return nil, &BadEventError{Reason: "invalid sender: " + err.Error()}
	}
	content := ne.Content
	if len(content) == 0 {
		content = []byte("{}")
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID:   ne.Sender,
		RoomID:     r.row.ID,
		Type:       ne.Type,
		StateKey:   ne.StateKey,
		Content:    spec.RawJSON(content),
		Redacts:    ne.Redacts,
		PrevEvents: append([]string{}, prevEvents(prev)...), // never nil: the builder refuses nil
		Depth:      depth + 1,
	}
	eb := r.ver.NewEventBuilderFromProtoEvent(&proto)
	if err := eb.AddAuthEvents(&r.st); err != nil {
		return nil, &BadEventError{Reason: err.Error()}
	}
	return eb, nil
}

// store persists an authorised event that extends the room's single
// timeline: its row, the state it changes, its stream position, and the
// room's new extremity.
func (r *room) store(tx *storage.Tx, ev gomatrixserverlib.PDU) (Output, error) {
	pos, err := storage.NextStreamPos(tx)
	if err != nil {
		return Output{}, err
	}
	row, err := r.insertAt(tx, ev, r.st.snapshot, false, pos)
	if err != nil {
		return Output{}, err
	}
	typeNID, keyNID := row.TypeNID, row.KeyNID
	out := Output{RoomID: r.row.ID, Event: ev, RoomNID: r.row.NID, EventNID: row.NID, Pos: pos}
	var adds, removes []int64
	var set, del []storage.StateEntry
	if keyNID != 0 {
		old, err := r.st.set(tx, r.row.NID, &entry{typeNID: typeNID, keyNID: keyNID, eventNID: row.NID, pdu: ev})
		if err != nil {
			return Output{}, err
		}
		adds = []int64{row.NID}
		out.Adds = []string{ev.EventID()}
		if old != nil {
			removes = []int64{old.eventNID}
			out.Removes = []string{old.pdu.EventID()}
		}
		set = []storage.StateEntry{{TypeNID: typeNID, KeyNID: keyNID, EventNID: row.NID}}
	}
	if ev.Type() == spec.MRoomRedaction {
		if err := r.redact(tx, ev); err != nil {
			return Output{}, err
		}
	}
	if err := storage.AppendStreamAt(tx, pos, r.row.NID, row.NID, adds, removes); err != nil {
		return Output{}, err
	}
	if len(set) > 0 || len(del) > 0 {
		if err := storage.SetCurrentState(tx, r.row.NID, set, del); err != nil {
			return Output{}, err
		}
	}
	if ev.Type() == spec.MRoomMember {
		m, err := ev.Membership()
		if err != nil {
			return Output{}, err
		}
		if err := storage.SetMembership(tx, *ev.StateKey(), r.row.NID, m, row.NID, out.Pos); err != nil {
			return Output{}, err
		}
	}
	r.extend(ev, row.NID)
	r.row.Depth = max(r.row.Depth, ev.Depth())
	r.row.SnapshotNID = r.st.snapshot
	return out, nil
}

// extend makes a new event the tip: it replaces the extremities it
// refers to and joins those it does not (a sibling prepared beside it).
func (r *room) extend(ev gomatrixserverlib.PDU, nid int64) {
	prev := ev.PrevEventIDs()
	ids, nids := r.extIDs[:0:0], r.row.Extremities[:0:0]
	for i, id := range r.extIDs {
		if !slices.Contains(prev, id) {
			ids, nids = append(ids, id), append(nids, r.row.Extremities[i])
		}
	}
	r.extIDs, r.row.Extremities = append(ids, ev.EventID()), append(nids, nid)
}

// redact applies a redaction to its target when the spec allows it: the
// redacter may redact others' events (power level "redact"), or it is the
// target's own sender. A redaction of an unknown event is kept and
// applies nothing.
func (r *room) redact(tx *storage.Tx, ev gomatrixserverlib.PDU) error {
	targetID := redactsOf(ev)
	if targetID == "" {
		return nil
	}
	target, err := storage.EventByIDTx(tx, targetID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if target.RoomNID != r.row.NID || target.Redacted {
		return nil
	}
	pdu, err := r.rs.parse(r.row.Version, target.ID, target.JSON, false)
	if err != nil {
		return err
	}
	if pdu.SenderID() != ev.SenderID() && !r.canRedactOthers(ev.SenderID()) {
		return nil
	}
	redacted, err := r.ver.RedactEventJSON(target.JSON)
	if err != nil {
		return err
	}
	// Clients tell a redacted event from an empty one by this.
	if redacted, err = sjson.SetRawBytes(redacted, "unsigned.redacted_because", ev.JSON()); err != nil {
		return err
	}
	if err := storage.RedactEvent(tx, target.NID, redacted); err != nil {
		return err
	}
	delete(r.rows, target.ID)
	r.rs.pdus.drop(target.NID)
	// A redacted current state event keeps its place, with its content gone.
	if sk := pdu.StateKey(); sk != nil {
		k := tuple{EventType: pdu.Type(), StateKey: *sk}
		if e := r.st.state[k]; e != nil && e.eventNID == target.NID {
			p, err := r.rs.parse(r.row.Version, target.ID, redacted, true)
			if err != nil {
				return err
			}
			r.st.put(k, &entry{typeNID: e.typeNID, keyNID: e.keyNID, eventNID: e.eventNID, pdu: p})
		}
	}
	return nil
}

func (r *room) canRedactOthers(sender spec.SenderID) bool {
	create, _ := r.st.Create()
	var creator string
	if create != nil {
		creator = string(create.SenderID())
		if r.ver.PrivilegedCreators() {
			for _, c := range gomatrixserverlib.CreatorsFromCreateEvent(create) {
				if c == string(sender) {
					return true
				}
			}
		}
	}
	pl, err := gomatrixserverlib.NewPowerLevelContentFromAuthEvents(&r.st, creator)
	if err != nil {
		return false
	}
	return pl.UserLevel(sender) >= pl.Redact
}

// redactsOf is a redaction's target: top level before room version 11,
// in content from 11 on.
func redactsOf(ev gomatrixserverlib.PDU) string {
	if id := ev.Redacts(); id != "" {
		return id
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil {
		return ""
	}
	return c.Redacts
}
