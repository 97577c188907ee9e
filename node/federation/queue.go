package federation

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/storage"
)

// Limits of one transaction, from the spec.
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
)

// txnMemory is how long received transaction IDs are remembered.
const txnMemory = 24 * time.Hour

// The fan-out follows the roomserver's output stream with a persistent
// cursor: each event this server must send (its own users' events, and
// the joins and leaves it handled as the resident server) goes to every
// other server with members joined to the room, plus the server of a
// membership event's target (an invite, a kick). To a destination with
// nothing queued and no sender running, the events go at once, in a
// transaction built from the rows in hand (see sendDirect): the stream
// itself keeps them until sent, as the cursor is never saved past a row
// whose direct send is in flight, and they are queued only if it fails.
// Otherwise they are queued, and queueing and moving the cursor share one
// commit. A crash never loses an event; it may repeat one whose direct
// send was in flight, which the destination drops as already seen.
func (f *Federation) fanout(cursor int64) {
	defer f.wg.Done()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	retry := time.NewTimer(0)
	defer retry.Stop()
	<-retry.C
	// The cursor past rows that queued nothing is saved lazily, so a
	// node with no peers does not pay a second commit for every event.
	saved := cursor
	save := time.NewTimer(0)
	defer save.Stop()
	<-save.C
	saving := false
	flush := func(ctx context.Context) {
		at := f.safeCursor(cursor)
		if at == saved {
			return
		}
		if err := f.db.EnqueuePDUs(ctx, at, nil, nil); err != nil {
			f.log.Warn("saving the fan-out cursor", "err", err)
			return
		}
		saved = at
	}
	defer func() { flush(context.Background()) }()
	// failed tells whether the fan-out is stopping, or else logs err and
	// retries in a second.
	failed := func(err error) bool {
		if f.ctx.Err() != nil {
			return true
		}
		f.log.Error("queueing events", "err", err)
		retry.Reset(time.Second)
		return false
	}
	read := true // the stream may hold rows nobody announced (a restart)
	for {
		if read {
			var err error
			if cursor, saved, err = f.fanoutOnce(cursor, saved); err != nil && failed(err) {
				return
			}
		}
		if cursor != saved && !saving {
			save.Reset(cursorSaveDelay)
			saving = true
		}
		read = false
		select {
		case <-f.fanWake:
			var rows []storage.FedStreamRow
			var last int64
			if last, rows, read = f.passOver(cursor); read || len(rows) == 0 {
				cursor = last
				break
			}
			var err error
			if cursor, saved, err = f.fanoutRows(rows, last, cursor, saved); err != nil && failed(err) {
				return
			}
		case <-retry.C:
			read = true
		case <-save.C:
			saving = false
			flush(f.ctx)
		case <-prune.C:
			if err := f.db.PruneFedTxns(f.ctx, time.Now().Add(-txnMemory).UnixMilli()); err != nil {
				f.log.Warn("pruning old transactions", "err", err)
			}
		case <-f.ctx.Done():
			return
		}
	}
}

// announced is what OnOutput tells the fan-out of an output: its stream
// row, so the fan-out need not read it back.
type announced struct {
	row storage.FedStreamRow
	// stateless: the event changes no state, so it goes to the room's
	// other servers and nobody else, and only if it is ours (read only
	// then): another server's event its own server sends (this one
	// forwards only joins and leaves it signed as the resident server,
	// which are state)
	stateless, ours bool
}

// maxAnnounced bounds the announcements kept between two looks.
const maxAnnounced = 4096

// passOver takes the announced outputs that follow the cursor, without
// reading the stream: it returns the position they reach and the rows of
// those to plan, leaving out those this server need send nowhere (other
// servers' messages, and its own in rooms no other server is in). A gap
// (a row not announced, or not yet) means reading the stream from the
// cursor instead: it returns the cursor and true.
func (f *Federation) passOver(cursor int64) (int64, []storage.FedStreamRow, bool) {
	f.outMu.Lock()
	outs, lost := f.outs, f.outsLost
	f.outs, f.outsLost = nil, false
	f.outMu.Unlock()
	if lost {
		return cursor, nil, true
	}
	slices.SortFunc(outs, func(a, b announced) int { return cmp.Compare(a.row.Pos, b.row.Pos) })
	last := cursor
	var rows []storage.FedStreamRow
	for _, o := range outs {
		switch {
		case o.row.Pos <= last:
		case o.row.Pos != last+1:
			return cursor, nil, true
		case o.stateless && (!o.ours || f.alone(o.row.RoomID)):
			last = o.row.Pos
		default:
			last = o.row.Pos
			rows = append(rows, o.row)
		}
	}
	return last, rows, false
}

// alone tells whether no other server is known to have members joined to
// a room (from the joined-servers cache, which every state change
// clears; unknown means no).
func (f *Federation) alone(roomID string) bool {
	f.joinedMu.Lock()
	defer f.joinedMu.Unlock()
	nid, ok := f.roomNIDs[roomID]
	if !ok {
		return false
	}
	servers, ok := f.joined[nid]
	if !ok {
		return false
	}
	for _, s := range servers {
		if s != string(f.cfg.ServerName) {
			return false
		}
	}
	return true
}

// cursorSaveDelay bounds how far the saved fan-out cursor lags behind
// rows that queued nothing. Rows read again after a crash are planned
// again: at worst a server that joined since gets a few older events.
const cursorSaveDelay = time.Second

// fanoutOnce sends or queues everything after cursor, reading the stream,
// and returns the new cursor and the saved one.
func (f *Federation) fanoutOnce(cursor, saved int64) (int64, int64, error) {
	const batch = 256
	for {
		rows, err := f.db.FedStreamAfter(f.ctx, cursor, batch)
		if err != nil || len(rows) == 0 {
			return cursor, saved, err
		}
		if cursor, saved, err = f.fanoutRows(rows, rows[len(rows)-1].Pos, cursor, saved); err != nil {
			return cursor, saved, err
		}
		if len(rows) < batch {
			return cursor, saved, nil // caught up; OnOutput wakes us for more
		}
	}
}

// fanoutRows sends or queues the events of rows, which take the stream
// from cursor to last, and returns the new cursor and the saved one.
func (f *Federation) fanoutRows(rows []storage.FedStreamRow, last, cursor, saved int64) (int64, int64, error) {
	items, forwarded, err := f.plan(rows)
	if err != nil {
		return cursor, saved, err
	}
	if len(forwarded) == 0 {
		// (Forward markers are dropped only by queueing.)
		items = f.sendDirect(rows, items)
	}
	if len(items) > 0 || len(forwarded) > 0 {
		at := f.safeCursor(last)
		if err := f.db.EnqueuePDUs(f.ctx, at, items, forwarded); err != nil {
			return cursor, saved, err
		}
		saved = at
	}
	counts := map[string]int{}
	for _, it := range items {
		counts[it.Dest]++
	}
	for name, n := range counts {
		d := f.destination(name)
		f.queued(d, n)
		f.kick(d)
	}
	return last, saved, nil
}

// streamEvent is what the fan-out reads of an event.
type streamEvent struct {
	Sender   string  `json:"sender"`
	Type     string  `json:"type"`
	StateKey *string `json:"state_key"`
	Content  struct {
		Membership string `json:"membership"`
	} `json:"content"`
}

// plan decides who gets each stream row.
func (f *Federation) plan(rows []storage.FedStreamRow) ([]storage.FedQueued, []string, error) {
	ours := string(f.cfg.ServerName)
	var items []storage.FedQueued
	var forwarded []string
	for _, row := range rows {
		f.joinedMu.Lock()
		if row.StateChanged {
			delete(f.joined, row.RoomNID)
		}
		if len(f.roomNIDs) > 10_000 {
			clear(f.roomNIDs)
		}
		f.roomNIDs[row.RoomID] = row.RoomNID
		f.joinedMu.Unlock()
		var ev streamEvent
		if err := json.Unmarshal(row.JSON, &ev); err != nil {
			f.log.Warn("unreadable stream event", "event", row.EventID, "err", err)
			continue
		}
		origin := serverOf(ev.Sender)
		if ev.Type == spec.MRoomMember && ev.StateKey != nil && ev.Content.Membership == spec.Join {
			catchUp, err := f.catchUp(row, serverOf(*ev.StateKey))
			if err != nil {
				return nil, nil, err
			}
			items = append(items, catchUp...)
		}
		if origin != ours {
			marked, err := f.db.ForwardMarked(f.ctx, row.EventID)
			if err != nil {
				return nil, nil, err
			}
			if !marked {
				continue // its own server sends it
			}
			forwarded = append(forwarded, row.EventID)
		}
		servers, err := f.joinedServers(f.ctx, row.RoomNID)
		if err != nil {
			return nil, nil, err
		}
		if ev.Type == spec.MRoomMember && ev.StateKey != nil {
			if s := serverOf(*ev.StateKey); s != "" && !slices.Contains(servers, s) {
				servers = append(slices.Clip(servers), s)
			}
		}
		for _, s := range servers {
			if s != ours && s != origin {
				items = append(items, storage.FedQueued{Dest: s, EventNID: row.EventNID})
			}
		}
	}
	return items, forwarded, nil
}

// catchUp queues for a joining server the room's forward extremities
// other than its join. An event sent concurrently with the join, by a
// server that did not know of it yet, never went to the joiner and is
// referenced by nothing the joiner has: it would stay missing until some
// later event pointed at it. Every server that sees the join offers its
// extremities, so the joiner gets each such event (and, through
// get_missing_events, what leads to it) from the server that has it.
func (f *Federation) catchUp(join storage.FedStreamRow, joiner string) ([]storage.FedQueued, error) {
	if joiner == "" || joiner == string(f.cfg.ServerName) {
		return nil, nil
	}
	room, err := f.db.RoomByID(f.ctx, join.RoomID)
	if err != nil {
		return nil, fmt.Errorf("extremities of %s: %w", join.RoomID, err)
	}
	var items []storage.FedQueued
	for _, nid := range room.Extremities {
		if nid != join.EventNID {
			items = append(items, storage.FedQueued{Dest: joiner, EventNID: nid})
		}
	}
	return items, nil
}

// joinedServers lists the servers with members joined to a room, from a
// cache the fan-out invalidates on every state change.
func (f *Federation) joinedServers(ctx context.Context, roomNID int64) ([]string, error) {
	f.joinedMu.Lock()
	s, ok := f.joined[roomNID]
	f.joinedMu.Unlock()
	if ok {
		return s, nil
	}
	users, err := f.db.JoinedUsers(ctx, roomNID)
	if err != nil {
		return nil, fmt.Errorf("federation: joined members: %w", err)
	}
	set := map[string]bool{}
	for _, u := range users {
		if srv := serverOf(u); srv != "" && !set[srv] {
			set[srv] = true
			s = append(s, srv)
		}
	}
	slices.Sort(s)
	f.joinedMu.Lock()
	if len(f.joined) > 10_000 {
		clear(f.joined)
	}
	f.joined[roomNID] = s
	f.joinedMu.Unlock()
	return s, nil
}

// RoomServers lists the servers other than this one with members joined
// to a room: where the room's EDUs (typing, receipts) go.
func (f *Federation) RoomServers(ctx context.Context, roomID string) ([]string, error) {
	nid, err := f.db.RoomNIDOf(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("federation: room %s: %w", roomID, err)
	}
	all, err := f.joinedServers(ctx, nid)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(all))
	for _, s := range all {
		if s != string(f.cfg.ServerName) {
			out = append(out, s)
		}
	}
	return out, nil
}

// SendEDU queues an EDU for each destination (this server skipped). The
// queue is persistent; ephemeral EDUs are bounded (MaxQueuedEDUs per
// destination, oldest dropped: typing and presence go stale anyway), but
// to-device messages, which carry E2EE room keys, wait until sent.
func (f *Federation) SendEDU(ctx context.Context, edu gomatrixserverlib.EDU, destinations ...string) error {
	edu.Origin = string(f.cfg.ServerName)
	var dests []string
	for _, d := range destinations {
		if d != "" && d != string(f.cfg.ServerName) && !slices.Contains(dests, d) {
			dests = append(dests, d)
		}
	}
	if len(dests) == 0 {
		return nil
	}
	b, err := json.Marshal(edu)
	if err != nil {
		return fmt.Errorf("federation: encode EDU: %w", err)
	}
	durable := edu.Type == spec.MDirectToDevice
	if err := f.db.EnqueueEDU(ctx, dests, b, durable, f.cfg.MaxQueuedEDUs); err != nil {
		return fmt.Errorf("federation: queue EDU: %w", err)
	}
	for _, d := range dests {
		f.kick(f.destination(d))
	}
	return nil
}

// destination is one remote server's sender state. At most one sender
// goroutine runs per destination, and only while it has work.
type destination struct {
	name   string
	mu     sync.Mutex
	queued int  // PDUs queued, approximately
	active bool // a sender goroutine is running
	wake   chan struct{}
	online chan struct{}
}

func (d *destination) addQueued(n int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queued = max(0, d.queued+n)
	return d.queued
}

func (f *Federation) destination(name string) *destination {
	f.destMu.Lock()
	defer f.destMu.Unlock()
	d := f.dests[name]
	if d == nil {
		d = &destination{name: name, wake: make(chan struct{}, 1), online: make(chan struct{}, 1)}
		f.dests[name] = d
	}
	return d
}

// kick tells d's sender there is work, starting it if it is not running.
func (f *Federation) kick(d *destination) {
	f.destMu.Lock()
	defer f.destMu.Unlock()
	if !f.started || f.closed {
		return // Start picks up what is queued
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.active {
		d.active = true
		f.wg.Add(1)
		go f.sender(d, nil)
		return
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// peerOnline cuts short a destination's back-off: the server just talked
// to us, so it is probably reachable again.
func (f *Federation) peerOnline(name string) {
	f.destMu.Lock()
	d := f.dests[name]
	f.destMu.Unlock()
	if d == nil {
		return
	}
	select {
	case d.online <- struct{}{}:
	default:
	}
}

// PeerOnline tells federation that a server is reachable again (the
// transport connected to it), so its queue is retried now rather than
// after the back-off.
func (f *Federation) PeerOnline(serverName string) { f.peerOnline(serverName) }

func (f *Federation) trim(d *destination) {
	n, err := f.db.TrimPDUQueue(f.ctx, d.name, f.cfg.MaxQueuedPDUs)
	if err != nil {
		f.log.Warn("trimming queue", "dest", d.name, "err", err)
		return
	}
	if n > 0 {
		d.addQueued(-int(n))
		f.log.Warn("queue full: dropped the oldest events; the server will fetch them when it returns",
			"dest", d.name, "dropped", n)
	}
}

// directSend is a fan-out's first attempt at sending events to an idle
// destination, from the stream rows in hand: no queue commit, no queue
// read, before the first byte leaves.
type directSend struct {
	from  int64 // the first stream row it carries: the cursor's bound
	id    gomatrixserverlib.TransactionID
	pdus  []json.RawMessage
	items []storage.FedQueued // what to queue if it fails
}

// sendDirect starts a direct send to each destination that is idle (no
// sender running, so nothing queued) and whose events are all among rows
// and fit one transaction, and returns the items left to queue, in order.
func (f *Federation) sendDirect(rows []storage.FedStreamRow, items []storage.FedQueued) []storage.FedQueued {
	if len(items) == 0 {
		return items
	}
	byNID := make(map[int64]*storage.FedStreamRow, len(rows))
	for i := range rows {
		byNID[rows[i].EventNID] = &rows[i]
	}
	byDest := map[string][]storage.FedQueued{}
	var dests []string
	for _, it := range items {
		if _, ok := byDest[it.Dest]; !ok {
			dests = append(dests, it.Dest)
		}
		byDest[it.Dest] = append(byDest[it.Dest], it)
	}
	var rest []storage.FedQueued
	for _, dest := range dests {
		its := byDest[dest]
		s := directOf(its, byNID)
		d := f.destination(dest)
		if s == nil || !f.claim(d, s.from) {
			rest = append(rest, its...)
			continue
		}
		s.id = gomatrixserverlib.TransactionID(fmt.Sprintf("%s-r%d-%d", f.nonce, s.from, its[len(its)-1].EventNID))
		go f.sender(d, s)
	}
	return rest
}

// directOf is the direct send of one destination's items: nil unless
// all are among the rows in hand and they fit one transaction.
func directOf(items []storage.FedQueued, byNID map[int64]*storage.FedStreamRow) *directSend {
	if len(items) > maxTxnPDUs {
		return nil
	}
	s := &directSend{items: items}
	for _, it := range items {
		row := byNID[it.EventNID]
		if row == nil { // a catch-up item, from before these rows
			return nil
		}
		if s.from == 0 || row.Pos < s.from {
			s.from = row.Pos
		}
		s.pdus = append(s.pdus, row.JSON)
	}
	return s
}

// claim makes this fan-out d's sender if d has none, holding the cursor
// below the stream row from until its direct send lands or is queued.
func (f *Federation) claim(d *destination, from int64) bool {
	f.destMu.Lock()
	defer f.destMu.Unlock()
	if !f.started || f.closed {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.active {
		return false
	}
	d.active = true
	f.wg.Add(1)
	f.directMu.Lock()
	f.direct[from]++
	f.directMu.Unlock()
	return true
}

// release lets the cursor pass a direct send's rows again.
func (f *Federation) release(from int64) {
	f.directMu.Lock()
	defer f.directMu.Unlock()
	if f.direct[from]--; f.direct[from] <= 0 {
		delete(f.direct, from)
	}
}

// safeCursor is the furthest the saved cursor may go towards pos: short
// of every row whose direct send has not landed (or been queued).
func (f *Federation) safeCursor(pos int64) int64 {
	f.directMu.Lock()
	defer f.directMu.Unlock()
	for from := range f.direct {
		pos = min(pos, from-1)
	}
	return pos
}

// queued counts n more PDUs queued for d, trimming its queue once past
// MaxQueuedPDUs.
func (f *Federation) queued(d *destination, n int) {
	if d.addQueued(n) > f.cfg.MaxQueuedPDUs {
		f.trim(d)
	}
}

// sender sends d's queue, one transaction at a time, oldest first, after
// first, a direct send (or nil). On failure it backs off exponentially
// (MinBackoff up to MaxBackoff) and keeps everything queued; after a
// success it goes on at once.
func (f *Federation) sender(d *destination, first *directSend) {
	defer f.wg.Done()
	var backoff time.Duration
	for {
		if f.ctx.Err() != nil {
			return
		}
		var err error
		if first != nil {
			err = f.sendFirst(d, first)
			first = nil
			if err == nil && d.idle() {
				return // nothing was queued meanwhile
			}
		} else {
			// Drop a pending wake-up: this peek sees everything queued so far.
			select {
			case <-d.wake:
			default:
			}
			var pdus []storage.FedPDU
			var edus []storage.FedEDU
			pdus, edus, err = f.db.PeekQueue(f.ctx, d.name, maxTxnPDUs, maxTxnEDUs)
			if err == nil && len(pdus) == 0 && len(edus) == 0 {
				if d.idle() {
					return
				}
				continue
			}
			if err == nil {
				err = f.sendTxn(d, pdus, edus)
			}
			if err == nil && len(pdus) < maxTxnPDUs && len(edus) < maxTxnEDUs && d.idle() {
				return // that was all: nothing was queued since the peek
			}
		}
		if err == nil {
			backoff = 0
			continue
		}
		if f.ctx.Err() != nil {
			return
		}
		backoff = min(max(backoff*2, f.cfg.MinBackoff), f.cfg.MaxBackoff)
		f.log.Info("sending failed; retrying later", "dest", d.name, "in", backoff, "err", err)
		select { // a sign of life from before this failure says nothing
		case <-d.online:
		default:
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-d.online:
			t.Stop()
			backoff = 0
		case <-f.ctx.Done():
			t.Stop()
			return
		}
	}
}

// sendFirst makes a direct send; if it fails, its events are queued for
// the retries (unless the queue cannot take them either: then the cursor
// stays held below them, and after a restart they are read again).
func (f *Federation) sendFirst(d *destination, s *directSend) error {
	err := f.transmit(d, s.id, s.pdus, nil)
	if err != nil {
		f.requeueMu.Lock()
		floor, qerr := f.db.RequeuePDUs(f.ctx, s.items, f.requeueFloor)
		if qerr == nil {
			f.requeueFloor = floor
		}
		f.requeueMu.Unlock()
		if qerr != nil {
			f.log.Warn("queueing events whose sending failed", "dest", d.name, "err", qerr)
			return err
		}
		f.queued(d, len(s.items))
	}
	f.release(s.from)
	return err
}

// idle ends the sender unless work was queued since its last peek (kick
// leaves a wake-up while the sender is active).
func (d *destination) idle() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.wake:
		return false
	default:
		d.active = false
		return true
	}
}

// sendTxn sends one transaction of d's queue and dequeues what it carried.
func (f *Federation) sendTxn(d *destination, pdus []storage.FedPDU, edus []storage.FedEDU) error {
	var lastPDU, lastEDU int64
	jsons := make([]json.RawMessage, 0, len(pdus))
	for _, p := range pdus {
		lastPDU = p.Seq
		if p.JSON != nil {
			jsons = append(jsons, p.JSON)
		}
	}
	var parsed []gomatrixserverlib.EDU
	for _, e := range edus {
		lastEDU = e.Seq
		var edu gomatrixserverlib.EDU
		if err := json.Unmarshal(e.JSON, &edu); err != nil {
			continue
		}
		parsed = append(parsed, edu)
	}
	// The same contents get the same ID (within a run): a retry of a
	// transaction the other side did process is answered from its
	// record, not processed twice.
	var firstPDU, firstEDU int64
	if len(pdus) > 0 {
		firstPDU = pdus[0].Seq
	}
	if len(edus) > 0 {
		firstEDU = edus[0].Seq
	}
	id := gomatrixserverlib.TransactionID(fmt.Sprintf("%s-%d-%d-%d-%d", f.nonce, firstPDU, lastPDU, firstEDU, lastEDU))
	if err := f.transmit(d, id, jsons, parsed); err != nil {
		return err
	}
	if err := f.db.DequeueSent(f.ctx, d.name, lastPDU, lastEDU); err != nil {
		return err
	}
	d.addQueued(-len(pdus))
	return nil
}

// transmit sends a transaction (if it carries anything). It fails only if
// the send may be retried: one the destination refuses as malformed is
// logged and dropped.
func (f *Federation) transmit(d *destination, id gomatrixserverlib.TransactionID, pdus []json.RawMessage, edus []gomatrixserverlib.EDU) error {
	if len(pdus) == 0 && len(edus) == 0 {
		return nil
	}
	txn := gomatrixserverlib.Transaction{
		TransactionID: id, Origin: f.cfg.ServerName, Destination: spec.ServerName(d.name),
		OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: pdus, EDUs: edus,
	}
	if txn.PDUs == nil {
		txn.PDUs = []json.RawMessage{}
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.cfg.RequestTimeout)
	resp, err := f.client.SendTransaction(ctx, txn)
	cancel()
	if err != nil && !permanent(err) {
		return err
	}
	if err != nil {
		f.log.Error("destination refused a transaction; dropping it", "dest", d.name, "txn", id, "err", err)
	}
	for eventID, r := range resp.PDUs {
		if r.Error != "" {
			f.log.Debug("destination refused an event", "dest", d.name, "event", eventID, "err", r.Error)
		}
	}
	return nil
}

// permanent reports whether a failed send must not be retried: the other
// side said the transaction itself is malformed.
func permanent(err error) bool {
	var he gomatrix.HTTPError
	if errors.As(err, &he) {
		return he.Code == 400 || he.Code == 413
	}
	return false
}
