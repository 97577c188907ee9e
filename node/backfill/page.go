package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
)

// page is one /backfill answer, parsed and verified.
type page struct {
	server spec.ServerName
	// the room's events whose hashes and signatures passed, oldest first
	evs []roomserver.Verified
	err error
}

// fetchPage asks s for limit events before from and verifies them: parsed,
// hashed and signature-checked once, on every core; storing them later
// only checks auth. Once they have arrived, and before they are verified,
// the page before them starts being read ahead, as the page after ra (nil:
// this is the room's next page).
func (b *Backfiller) fetchPage(ctx context.Context, st *roomBackfill, ra *readAhead, s spec.ServerName, roomID string, version gomatrixserverlib.RoomVersion, from []string, limit int) *page {
	p := &page{server: s}
	txn, err := b.client.Backfill(ctx, b.origin, s, roomID, limit, from)
	if err != nil {
		p.err = err
		return p
	}
	if next := guessNext(txn.PDUs); ra != nil {
		b.arrived(st, ra, next)
	} else {
		b.ahead(st, nil, s, roomID, version, next, limit)
	}
	in := make([]roomserver.InputEvent, len(txn.PDUs))
	for i, js := range txn.PDUs {
		in[i] = roomserver.InputEvent{Origin: string(s), RoomVersion: version, JSON: js, Backfilled: true}
	}
	p.evs = make([]roomserver.Verified, 0, len(in))
	refused, firstErr := 0, error(nil)
	for _, v := range b.rs.Verify(ctx, in) {
		switch {
		case v.Err != nil:
			if refused++; firstErr == nil {
				firstErr = v.Err
			}
		case v.PDU().RoomID().String() == roomID:
			p.evs = append(p.evs, v)
		}
	}
	if refused > 0 {
		// One line a page: a hostile server must not flood the log.
		b.log.Info("backfilled events refused", "room", roomID, "server", s, "refused", refused, "first", firstErr)
	}
	// Oldest first, so each event's prev events are in before it.
	sort.SliceStable(p.evs, func(i, j int) bool { return p.evs[i].PDU().Depth() < p.evs[j].PDU().Depth() })
	return p
}

// store stores a page, returning how many of its events were stored.
// Before it does, it makes sure the next page is being read ahead, from
// where this one leaves history missing.
func (b *Backfiller) store(ctx context.Context, st *roomBackfill, roomID string, version gomatrixserverlib.RoomVersion, p *page, limit int) (int, error) {
	if len(p.evs) == 0 {
		return 0, nil
	}
	inPage := make(map[string]bool, len(p.evs))
	for _, v := range p.evs {
		inPage[v.PDU().EventID()] = true
	}
	// Only prev events from outside the page are looked up: those in it
	// (all but the oldest's, in a linear history) are being stored now.
	var prevs []string
	for _, v := range p.evs {
		for _, id := range v.PDU().PrevEventIDs() {
			if !inPage[id] {
				prevs = append(prevs, id)
			}
		}
	}
	_, inTimeline, err := b.rs.Have(ctx, prevs)
	if err != nil {
		return 0, err
	}
	// What this node will still lack once the page is stored: where the
	// next backfill of the room starts.
	var next []string
	for _, id := range prevs {
		if !inPage[id] && !inTimeline[id] {
			inPage[id] = true // once
			next = append(next, id)
		}
	}
	b.ahead(st, nil, p.server, roomID, version, next, limit)

	batch := make(map[string]bool, len(p.evs))
	for i := range p.evs {
		ev := p.evs[i].PDU()
		// Where the history we got begins (its prev events neither here
		// nor earlier in this batch), the state before it comes from the
		// server.
		if slices.ContainsFunc(ev.PrevEventIDs(), func(id string) bool { return !inTimeline[id] && !batch[id] }) {
			if p.evs[i].StateBefore, err = b.stateBefore(ctx, p.server, roomID, version, ev.EventID()); err != nil {
				return 0, err
			}
		}
		batch[ev.EventID()] = true
	}
	stored := 0
	for i, res := range b.rs.InputVerified(ctx, p.evs) {
		var rej *roomserver.RejectedError
		switch {
		case res.Err == nil:
			stored++
		case errors.As(res.Err, &rej):
			// Kept as rejected: never served, and never asked for again.
		default:
			b.log.Info("backfilled event not stored", "room", roomID, "event", p.evs[i].PDU().EventID(), "err", res.Err)
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
		ev, err := roomserver.ParseUntrusted(verImpl, js)
		if err == nil && ev.RoomID().String() == roomID {
			out = append(out, ev)
		}
	}
	return out
}
