package roomserver

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/storage"
)

// RoomVersion returns a room's version, or ErrRoomNotFound.
func (rs *Roomserver) RoomVersion(ctx context.Context, roomID string) (gomatrixserverlib.RoomVersion, error) {
	row, err := rs.room(ctx, roomID)
	if err != nil {
		return "", err
	}
	return gomatrixserverlib.RoomVersion(row.Version), nil
}

// roomRef is what never changes about a room once it exists.
type roomRef struct {
	NID     int64
	Version string
}

// maxRoomRefs bounds the room reference cache.
const maxRoomRefs = 10_000

// room returns a room's NID and version, from memory after the first
// read: every event from another server and every state lookup asks.
func (rs *Roomserver) room(ctx context.Context, roomID string) (roomRef, error) {
	return cachedLoad(&rs.refsMu, &rs.refs, maxRoomRefs, roomID, func() (roomRef, error) {
		row, err := rs.db.RoomByID(ctx, roomID)
		if errors.Is(err, storage.ErrNotFound) {
			return roomRef{}, ErrRoomNotFound
		}
		if err != nil {
			return roomRef{}, fmt.Errorf("roomserver: room %s: %w", roomID, err)
		}
		return roomRef{NID: row.NID, Version: row.Version}, nil
	})
}

// CurrentState returns a room's current state events.
func (rs *Roomserver) CurrentState(ctx context.Context, roomID string) ([]gomatrixserverlib.PDU, error) {
	row, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	evs, err := rs.db.CurrentState(ctx, row.NID)
	if err != nil {
		return nil, fmt.Errorf("roomserver: state of %s: %w", roomID, err)
	}
	return rs.parseAll(row.Version, evs)
}

func (rs *Roomserver) parseAll(version string, evs []*storage.Event) ([]gomatrixserverlib.PDU, error) {
	out := make([]gomatrixserverlib.PDU, 0, len(evs))
	for _, e := range evs {
		pdu, err := rs.parse(version, e.ID, e.JSON, e.Redacted)
		if err != nil {
			return nil, fmt.Errorf("roomserver: event %s: %w", e.ID, err)
		}
		out = append(out, pdu)
	}
	return out, nil
}

// StateEvent returns one current state event, or nil if there is none.
func (rs *Roomserver) StateEvent(ctx context.Context, roomID, eventType, stateKey string) (gomatrixserverlib.PDU, error) {
	row, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	ev, err := rs.db.CurrentStateEvent(ctx, row.NID, eventType, stateKey)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("roomserver: state of %s: %w", roomID, err)
	}
	return rs.parse(row.Version, ev.ID, ev.JSON, ev.Redacted)
}

// Membership returns a user's current membership of a room ("leave" when
// they never had one), or ErrRoomNotFound.
func (rs *Roomserver) Membership(ctx context.Context, roomID, userID string) (string, error) {
	row, err := rs.room(ctx, roomID)
	if err != nil {
		return "", err
	}
	m, err := rs.db.Membership(ctx, userID, row.NID)
	if errors.Is(err, storage.ErrNotFound) {
		return spec.Leave, nil
	}
	return m, err
}

// RoomsWithMembership lists the rooms where a user's membership is m.
func (rs *Roomserver) RoomsWithMembership(ctx context.Context, userID, membership string) ([]string, error) {
	return rs.db.RoomsWithMembership(ctx, userID, membership)
}

// Event returns an event by ID, or ErrEventNotFound. Rejected events are
// not found.
func (rs *Roomserver) Event(ctx context.Context, eventID string) (gomatrixserverlib.PDU, error) {
	ev, ver, err := rs.event(ctx, eventID)
	if err != nil {
		return nil, err
	}
	return rs.parse(ver, ev.ID, ev.JSON, ev.Redacted)
}

func (rs *Roomserver) event(ctx context.Context, eventID string) (*storage.Event, string, error) {
	ev, err := rs.db.EventByID(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && ev.Rejected) {
		return nil, "", ErrEventNotFound
	}
	if err != nil {
		return nil, "", fmt.Errorf("roomserver: event %s: %w", eventID, err)
	}
	ver, err := rs.db.RoomVersionOf(ctx, ev.RoomNID)
	if err != nil {
		return nil, "", fmt.Errorf("roomserver: event %s: %w", eventID, err)
	}
	return ev, ver, nil
}

// StateAfter returns the room state after an event.
func (rs *Roomserver) StateAfter(ctx context.Context, eventID string) ([]gomatrixserverlib.PDU, error) {
	return rs.stateAt(ctx, eventID, true)
}

// StateBefore returns the room state before an event: what /state_ids
// serves for it.
func (rs *Roomserver) StateBefore(ctx context.Context, eventID string) ([]gomatrixserverlib.PDU, error) {
	return rs.stateAt(ctx, eventID, false)
}

func (rs *Roomserver) stateAt(ctx context.Context, eventID string, after bool) ([]gomatrixserverlib.PDU, error) {
	ev, ver, err := rs.event(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if !after {
		ev.KeyNID = 0 // do not layer the event itself on top
	}
	if ev.SnapshotNID == 0 {
		return nil, fmt.Errorf("roomserver: event %s is an outlier: its state is unknown", eventID)
	}
	entries, err := rs.snapshotEntries(ctx, ev.SnapshotNID)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, 0, len(entries)+1)
	for _, e := range entries {
		if ev.KeyNID != 0 && e.TypeNID == ev.TypeNID && e.KeyNID == ev.KeyNID {
			continue // replaced by the event itself
		}
		nids = append(nids, e.EventNID)
	}
	if ev.KeyNID != 0 {
		nids = append(nids, ev.NID)
	}
	evs, err := rs.db.EventsByNID(ctx, nids)
	if err != nil {
		return nil, fmt.Errorf("roomserver: state after %s: %w", eventID, err)
	}
	return rs.parseAll(ver, evs)
}

// snapshotEntries loads every entry of a snapshot.
func (rs *Roomserver) snapshotEntries(ctx context.Context, snapshotNID int64) ([]storage.StateEntry, error) {
	blocks, err := rs.db.SnapshotBlocks(ctx, snapshotNID)
	if err != nil {
		return nil, fmt.Errorf("roomserver: snapshot %d: %w", snapshotNID, err)
	}
	var out []storage.StateEntry
	for _, b := range blocks {
		if b == 0 {
			continue
		}
		es, err := rs.db.StateBlock(ctx, b)
		if err != nil {
			return nil, fmt.Errorf("roomserver: snapshot %d: %w", snapshotNID, err)
		}
		out = append(out, es...)
	}
	return out, nil
}

// AuthChain returns the full auth chain of the given events (not the
// events themselves), for send_join and /event_auth answers.
func (rs *Roomserver) AuthChain(ctx context.Context, eventIDs []string) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]bool{}
	queue := []string{}
	var version string
	for _, id := range eventIDs {
		ev, ver, err := rs.event(ctx, id)
		if err != nil {
			return nil, err
		}
		version = ver
		p, err := rs.parse(ver, ev.ID, ev.JSON, ev.Redacted)
		if err != nil {
			return nil, err
		}
		queue = append(queue, authEventIDs(p)...)
	}
	var out []gomatrixserverlib.PDU
	for len(queue) > 0 {
		id := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if seen[id] {
			continue
		}
		seen[id] = true
		ev, err := rs.db.EventByID(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("roomserver: auth chain: %s: %w", id, err)
		}
		p, err := rs.parse(version, ev.ID, ev.JSON, ev.Redacted)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
		queue = append(queue, authEventIDs(p)...)
	}
	return out, nil
}

// authEventIDs lists an event's auth events, with the create event that
// room version 12 leaves out.
func authEventIDs(p gomatrixserverlib.PDU) []string {
	ids := p.AuthEventIDs()
	verImpl, err := gomatrixserverlib.GetRoomVersion(p.Version())
	isCreate := p.Type() == spec.MRoomCreate && p.StateKeyEquals("")
	if c := "$" + p.RoomID().String()[1:]; err == nil && verImpl.DomainlessRoomIDs() && !isCreate && !slices.Contains(ids, c) {
		ids = append(ids, c)
	}
	return ids
}

// BackwardExtremities are where a room's timeline on this server begins
// short of the room's creation: the prev events of its oldest events that
// are not in it, and the oldest event itself. Backfill asks other servers
// for history from these.
func (rs *Roomserver) BackwardExtremities(ctx context.Context, roomID string) (missing []string, oldest string, err error) {
	row, err := rs.room(ctx, roomID)
	if err != nil {
		return nil, "", err
	}
	evs, err := rs.db.OldestTimelineEvents(ctx, row.NID)
	if err != nil || len(evs) == 0 {
		return nil, "", err
	}
	var prevs []string
	for _, e := range evs {
		p, err := rs.parse(row.Version, e.ID, e.JSON, e.Redacted)
		if err != nil {
			return nil, "", err
		}
		prevs = append(prevs, p.PrevEventIDs()...)
	}
	_, known, err := rs.db.Have(ctx, prevs)
	if err != nil {
		return nil, "", fmt.Errorf("roomserver: backward extremities of %s: %w", roomID, err)
	}
	for _, id := range prevs {
		if !known[id] && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	return missing, evs[0].ID, nil
}

// Have reports which events are stored (not rejected), and which of those
// are in their room's timeline.
func (rs *Roomserver) Have(ctx context.Context, ids []string) (stored, inTimeline map[string]bool, err error) {
	return rs.db.Have(ctx, ids)
}
